"""Tests for medr1/artifacts.py: the one rule per run file, as tables of damaged and well-formed files."""

from __future__ import annotations

import logging

import pytest

from medr1.artifacts import (
    ArtifactError,
    PredictionsAppender,
    eval_predictions,
    metrics_frame,
    read_metrics,
    read_predictions,
    read_reference,
    read_samples,
    read_summaries,
    truncate_metrics,
    truncate_samples,
    write_summary,
)
from medr1.paths import REPO_ROOT

ROW = '{"id": "%s", "benchmark": "b"%s}'


@pytest.mark.parametrize("content, expected", [
    (ROW % (1, "") + "\n" + ROW % (2, "") + "\n", [("1", 0), ("2", 0)]),              # well formed
    (ROW % (1, "") + "\n" + '{"id": "2", "ben', [("1", 0)]),                         # last line cut by a kill
    (ROW % (1, "") + "\n" + ROW % (1, ', "x": 9') + "\n", [("1", 0)]),               # duplicate key: first kept
    (ROW % (1, "") + "\n" + ROW % (1, ', "shift": 1') + "\n", [("1", 0), ("1", 1)]),  # another rotation: kept
    ("\n\n" + ROW % (1, "") + "\n\n", [("1", 0)]),                                  # blank lines ignored
    ("", []),                                                                       # empty file
])
def test_predictions_rule(tmp_path, content, expected):
    path = tmp_path / "predictions.jsonl"
    path.write_text(content)
    assert [(r["id"], r.get("shift", 0)) for r in read_predictions(path)] == expected
    assert path.read_text() == content  # readers never rewrite


@pytest.mark.parametrize("bad", [
    "not json",                    # garbage in the middle: not what a crash leaves
    '{"id": "2"}',                 # valid JSON, not a prediction row (no benchmark)
    '["a list"]',
])
def test_a_bad_line_before_the_last_raises(tmp_path, bad):
    path = tmp_path / "predictions.jsonl"
    path.write_text(ROW % (1, "") + "\n" + bad + "\n" + ROW % (3, "") + "\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_predictions(path)


def test_repair_rewrites_without_the_cut_line_and_appending_continues(tmp_path, caplog):
    path = tmp_path / "predictions.jsonl"
    path.write_text(ROW % (1, "") + "\n" + '{"id": "2", "ben')
    with caplog.at_level(logging.WARNING, logger="medr1.artifacts"):
        assert len(read_predictions(path, repair=True)) == 1
    assert "truncated last line" in caplog.text
    appender = PredictionsAppender(path)
    appender.write([{"id": "2", "benchmark": "b"}])
    appender.close()
    assert [r["id"] for r in read_predictions(path)] == ["1", "2"]


def test_eval_predictions_orders_base_then_trained(tmp_path):
    for label in ("zeta", "trained", "base"):
        (tmp_path / "eval" / label).mkdir(parents=True)
        (tmp_path / "eval" / label / "predictions.jsonl").write_text(ROW % (1, "") + "\n")
    assert list(eval_predictions(tmp_path)) == ["base", "trained", "zeta"]
    assert eval_predictions(tmp_path / "none") == {}


def test_truncate_samples_before_a_resume(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "te')  # killed while writing step 3
    assert truncate_samples(path, 1) == 1
    assert read_samples(path) == [{"step": 1}]
    assert truncate_samples(tmp_path / "absent.jsonl", 5) == 0


def test_samples_follow_the_jsonl_rule(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"step": 1, "text": "a"}\n{"step": 2, "te')
    assert [s["step"] for s in read_samples(path)] == [1]
    path.write_text('{"step": 1}\n{"no": "step"}\n{"step": 2}\n')
    with pytest.raises(ArtifactError):
        read_samples(path)


@pytest.mark.parametrize("content, steps, rewards", [
    ("step,reward\n1,0.1\n2,0.2\n", [1, 2], [0.1, 0.2]),              # well formed
    ("step,reward\n2,0.2\n1,0.1\n", [1, 2], [0.1, 0.2]),              # step order, whatever the file order
    ("step,reward\n1,0.1\n2,0.2\n2,0.3\n", [1, 2], [0.1, 0.3]),       # a re-logged step: the last row wins
    ("step,reward\n1,0.1\n2,", [1, 2], [0.1, None]),                  # an empty cell is None
    ("step,reward\n1,0.1\nxx,0.5\n", [1], [0.1]),                     # a row whose step does not parse
    ("step,reward\n", [], []),                                        # header only: nothing logged yet
])
def test_metrics_rule(tmp_path, content, steps, rewards):
    path = tmp_path / "metrics.csv"
    path.write_text(content)
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == steps and [r["reward"] for r in rows] == rewards
    assert metrics_frame(path)["step"].tolist() == steps


def test_truncate_metrics_keeps_rows_up_to_the_resume_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,reward\n1,0.1\n2,0.2\n3,0.3\n")
    assert truncate_metrics(path, 2, ["step", "reward"]) == 2
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_summaries_round_trip_and_a_damaged_one_raises(tmp_path):
    write_summary(tmp_path / "eval" / "base", {"model": "m", "scores": {}})
    assert read_summaries(tmp_path) == [("base", {"model": "m", "scores": {}})]
    assert read_summaries({"label": "x", "scores": {}})[0][0] == "x"
    (tmp_path / "eval" / "base" / "summary.json").write_text('{"model": ')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_summaries(tmp_path)


@pytest.mark.parametrize("text, error", [
    ("citation: c\nmodels:\n  - {model: m, accuracy: {medqa: 50.0}}\n", None),   # the one format
    ("models:\n  - {model: m, accuracy: {medqa: 50.0}}\n", "citation"),          # no citation
    ("citation: c\nmodels:\n  - {model: m}\n", "accuracy"),                      # no accuracy mapping
    ("- {model: m, benchmark: medqa, accuracy: 50}\n", "mapping"),              # a bare list
])
def test_reference_format(tmp_path, text, error):
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    if error is None:
        assert read_reference(path)["models"][0]["accuracy"] == {"medqa": 50.0}
    else:
        with pytest.raises(ValueError, match=error):
            read_reference(path)


@pytest.mark.parametrize("name", ["reference_results.yaml", "reference_results_medvlm.yaml"])
def test_shipped_reference_files_parse(name):
    assert read_reference(REPO_ROOT / "params" / name)["models"]


@pytest.mark.parametrize("module", ["report/results.py", "report/figures.py", "report/eval_figures.py",
                                    "report/training_figures.py"])
def test_reports_read_run_files_through_artifacts(module):
    text = (REPO_ROOT / "medr1" / module).read_text()
    # no parser of their own, and no dependency on the evaluation machinery
    assert not any(s in text for s in ("json.loads", "yaml.safe_load", "from medr1.evaluation.evaluate", "read_json(")), module
