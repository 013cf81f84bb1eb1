"""The notebook pipeline on params/smoke.yaml: every notebook runs headless under papermill and writes
the artifacts it must; reruns skip finished notebooks; a failure names the notebook and the cell."""

import json

import pytest

from medr1.pipeline import NOTEBOOKS, PipelineError, run_pipeline
from medr1.runs import RunDir

pytestmark = pytest.mark.slow
SMOKE = "params/smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    lines = []
    results = run_pipeline(SMOKE, {"runs_dir": str(runs_dir)}, log=lines.append)
    return RunDir(runs_dir / "smoke"), results, lines, runs_dir


def test_every_notebook_runs_and_writes_its_artifacts(smoke_run):
    run, results, lines, _ = smoke_run
    assert [r.status for r in results] == ["ran"] * len(NOTEBOOKS)
    assert all(f"{n}: done in" in "\n".join(lines) for n in NOTEBOOKS)  # a progress line per notebook
    for name in NOTEBOOKS:
        executed = json.loads((run.notebooks_dir / f"{name}.ipynb").read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    # 01: the training pool and what decontamination removed
    assert (run.path / "data" / "train_pool.jsonl").read_text().count("\n") == 16
    assert json.loads((run.path / "data" / "decontamination.json").read_text())["n_train"] >= 16
    # 02: scored samples of the model
    assert (run.path / "reward_samples.csv").stat().st_size > 0
    # 03: adapter, metrics with one row per step, samples, TensorBoard logs, manifest
    assert (run.adapter_dir / "adapter_config.json").is_file()
    metrics = run.metrics_csv.read_text().splitlines()
    assert len(metrics) == 1 + 2  # header + max_steps rows
    assert run.samples_jsonl.stat().st_size > 0
    assert any((run.train_dir / "tb").rglob("events.out.tfevents.*"))
    manifest = json.loads(run.manifest_path.read_text())
    assert {"data", "train"} <= set(manifest["jobs"]) and any(j.startswith("eval") for j in manifest["jobs"])
    # 04: predictions and summaries for base and trained, results table
    for label in ("base", "trained"):
        predictions = [json.loads(x) for x in (run.eval_dir / label / "predictions.jsonl").read_text().splitlines()]
        # eval_limit 4 questions, each under eval_permutations = 2 rotations of its options
        assert len(predictions) == 8 and sorted({(r["id"], r["shift"]) for r in predictions}) == sorted(
            {(r["id"], s) for r in predictions for s in (0, 1)})
        summary = json.loads((run.eval_dir / label / "summary.json").read_text())
        assert summary["scores"]["strict"]["mini_test"]["n_questions"] == 4
    assert "measured here" in (run.path / "results.md").read_text()
    assert "## Letter bias" in (run.path / "results.md").read_text()
    assert "reported by others" in (run.path / "results.md").read_text().lower()
    # 05: figures as PNG and PDF
    assert len(list(run.figures_dir.glob("*.png"))) >= 3
    assert len(list(run.figures_dir.glob("*.pdf"))) == len(list(run.figures_dir.glob("*.png")))


def test_rerun_skips_finished_notebooks(smoke_run):
    run, _, _, runs_dir = smoke_run
    lines = []
    results = run_pipeline(SMOKE, {"runs_dir": str(runs_dir)}, log=lines.append)
    assert [r.status for r in results] == ["skipped"] * len(NOTEBOOKS)
    assert "skipped" in lines[0]


def test_interrupted_pipeline_continues_from_the_missing_notebook(tmp_path):
    overrides = {"runs_dir": str(tmp_path)}
    # Stopped after 01; the rerun (05 stands in for "the rest": it is quick on a run without artifacts).
    run_pipeline(SMOKE, overrides, notebooks=NOTEBOOKS[:1], log=lambda _: None)
    results = run_pipeline(SMOKE, overrides, notebooks=(NOTEBOOKS[0], NOTEBOOKS[-1]), log=lambda _: None)
    assert [r.status for r in results] == ["skipped", "ran"]


def test_failure_names_notebook_and_cell_and_forced_rerun_starts_clean(tmp_path):
    overrides = {"runs_dir": str(tmp_path), "eval_benchmarks": ["no_such_benchmark"]}
    with pytest.raises(PipelineError) as err:
        run_pipeline(SMOKE, overrides, notebooks=NOTEBOOKS[:1], log=lambda _: None)
    message = str(err.value)
    assert "01_data_preparation failed in cell" in message and "DataError" in message
    assert "no_such_benchmark" in message
    run = RunDir(tmp_path / "smoke")
    (run.path / "eval").mkdir(parents=True)
    (run.path / "eval" / "stale.txt").write_text("from an earlier run")
    run_pipeline(SMOKE, {"runs_dir": str(tmp_path)}, notebooks=NOTEBOOKS[:1], force=True, log=lambda _: None)
    assert not (run.path / "eval").exists()  # forced rerun removed the old artifacts
