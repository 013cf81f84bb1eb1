"""Tests for medr1/report/figures.py: every figure from a tiny synthetic run directory, no model, Agg backend.

The fake run mirrors the artifact formats of medr1.train (metrics.csv with `reward/<name>` columns) and
medr1.evaluation.evaluate / medr1.evaluation.scoring (predictions.jsonl rows, summary.json per-benchmark dicts, results.csv).
Counts are chosen so that every asserted number (bars, pairs, p-values) can be checked by hand.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medr1.artifacts import metrics_frame, predictions_frame, read_predictions  # noqa: E402
from medr1.paths import REPO_ROOT  # noqa: E402
from medr1.report import (
    eval_figures as figures_eval,
)
from medr1.report import (  # noqa: E402
    figures,
    training_checks,
)
from medr1.report import (
    training_figures as figures_training,
)
from medr1.report.results import paired_table  # noqa: E402

# medqa: 4 options, 6 questions; pubmedqa: 3 options, 4 questions. Verdicts per question id:
BASE_CORRECT = {"medqa": [1, 1, 0, 0, 0, 1], "pubmedqa": [1, 0, 0, 1]}
TRAINED_CORRECT = {"medqa": [1, 1, 1, 1, 1, 0], "pubmedqa": [1, 1, 0, 1]}
OPTIONS = {"medqa": {"A": "a", "B": "b", "C": "c", "D": "d"}, "pubmedqa": {"A": "yes", "B": "no", "C": "maybe"}}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _metrics(n_steps: int = 30, kl: bool = False) -> pd.DataFrame:
    """medr1.train's metrics.csv layout: fixed columns, then reward/<name> per reward function."""
    steps = np.arange(1, n_steps + 1)
    return pd.DataFrame({
        "step": steps, "epoch": steps / n_steps, "loss": 0.01, "reward": np.linspace(0.2, 0.9, n_steps),
        "reward_std": 0.3, "frac_reward_zero_std": np.linspace(0.5, 0.1, n_steps),
        "kl": np.linspace(0, 0.05, n_steps) if kl else np.nan, "entropy": 1.0,
        "completion_length": np.linspace(100, 60, n_steps), "clipped_ratio": 0.05, "learning_rate": 1e-5,
        "grad_norm": 0.5, "step_time": 2.0,
        "reward/accuracy": np.linspace(0.1, 0.6, n_steps), "reward/answer_parsable": np.linspace(0.1, 0.3, n_steps),
    })


def _prediction_rows(correct: dict[str, list[int]], unparsed_every: int) -> list[dict]:
    rows = []
    for bench, verdicts in correct.items():
        for i, ok in enumerate(verdicts):
            gold = "A"
            unparsed = not ok and i % unparsed_every == 0
            extracted = None if unparsed else ("A" if ok else "B")
            rule = "none" if unparsed else ("answer_tag" if i % 2 else "answer_statement")
            rows.append({"id": f"{bench}-{i}", "benchmark": bench, "extracted": extracted, "rule": rule,
                         "gold": gold, "correct": bool(ok), "options": OPTIONS[bench],
                         "completion": f"Answer: {extracted}"})
    return rows


def _summary(rows: list[dict]) -> dict:
    """The shape of medr1.evaluation.evaluate's summary.json: {"scores": {scorer: {benchmark: {...}}}, ...}."""
    df = pd.DataFrame(rows)
    per_bench = {b: {"scorer": "strict", "benchmark": b, "n": len(sub), "n_correct": int(sub["correct"].sum()),
                     "accuracy": float(sub["correct"].mean()), "unparsed": int(sub["extracted"].isna().sum()),
                     "by_rule": sub["rule"].value_counts().to_dict()}
                 for b, sub in df.groupby("benchmark", sort=False)}
    return {"model": "embedded:smollm2-135m", "settings": {"max_new_tokens": 16},
            "generation": {b: {"mean_completion_tokens": 12.0} for b in per_bench}, "scores": {"strict": per_bench}}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_fake_run(root: Path, name: str = "fake", *, train: bool = True, evaluate: bool = True,
                  results_csv: bool = True, kl: bool = False) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "params.yaml").write_text(f"run_name: {name}\nbeta: {0.04 if kl else 0.0}\n")
    if train:
        (run / "train").mkdir()
        _metrics(kl=kl).to_csv(run / "train" / "metrics.csv", index=False)
    if evaluate:
        for label, correct, every in (("base", BASE_CORRECT, 2), ("trained", TRAINED_CORRECT, 5)):
            rows = _prediction_rows(correct, every)
            _write_jsonl(run / "eval" / label / "predictions.jsonl", rows)
            (run / "eval" / label / "summary.json").write_text(json.dumps(_summary(rows)))
    if results_csv:
        pd.DataFrame([
            # ours: two models x two scorers on medqa, one scorer on pubmedqa
            {"model": "base", "benchmark": "medqa", "accuracy": 0.5, "ci_low": 0.1, "ci_high": 0.9,
             "source": "measured here", "scorer": "strict", "n": 6},
            {"model": "trained", "benchmark": "medqa", "accuracy": 0.833, "ci_low": 0.4, "ci_high": 1.0,
             "source": "measured here", "scorer": "strict", "n": 6},
            {"model": "trained", "benchmark": "medqa", "accuracy": 0.9, "ci_low": 0.5, "ci_high": 1.0,
             "source": "measured here", "scorer": "huatuo", "n": 6},
            {"model": "trained", "benchmark": "pubmedqa", "accuracy": 0.75, "ci_low": 0.25, "ci_high": 1.0,
             "source": "measured here", "scorer": "strict", "n": 4},
            # published, in percent as the paper tables print them; MMLU-Pro was not measured here
            {"model": "Qwen2.5-7B-Instruct", "benchmark": "MedQA", "accuracy": 57.0,
             "source": "reported by Med-R1 README", "scorer": "huatuo"},
            {"model": "HuatuoGPT-o1-8B", "benchmark": "medqa", "accuracy": 72.6,
             "source": "reported by Med-R1 README", "scorer": "huatuo"},
            {"model": "Qwen2.5-7B-Instruct", "benchmark": "MMLU-Pro med", "accuracy": 53.2,
             "source": "reported by Med-R1 README", "scorer": "huatuo"},
        ]).to_csv(run / "results.csv", index=False)
    return run


def _legend_texts(fig: Figure) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()]


# --- loaders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns, expected", [
    (["reward", "reward_std", "reward/accuracy", "reward/format"], {"accuracy": "reward/accuracy",
                                                                    "format": "reward/format"}),  # medr1.train
    (["reward", "rewards/accuracy/mean", "rewards/accuracy/std"], {"accuracy": "rewards/accuracy/mean"}),  # TRL raw
    (["reward", "rewards/format"], {"format": "rewards/format"}),  # older TRL: no /mean suffix
    (["reward", "reward_std", "frac_reward_zero_std"], {}),  # aggregate columns are not reward functions
])
def test_reward_columns(columns, expected):
    assert figures_training.reward_columns(pd.DataFrame(columns=columns)) == expected


def test_metrics_frame_renames_trl_keys_and_dedupes_resumed_steps(tmp_path):
    path = tmp_path / "metrics.csv"
    # step 2 logged twice (a resume re-logged it): the later row wins; TRL's raw length key is renamed
    path.write_text("step,reward,completions/mean_length,completions/clipped_ratio\n"
                    "1,0.1,50,0\n2,0.2,60,0\n2,0.3,70,0.5\n3,0.4,80,0\n")
    df = metrics_frame(path)
    assert df["step"].tolist() == [1, 2, 3]
    assert df["completion_length"].tolist() == [50, 70, 80]
    assert "clipped_ratio" in df


def test_predictions_frame_after_a_cut_last_line_fills_rules(tmp_path, caplog):
    path = tmp_path / "predictions.jsonl"
    path.write_text(
        '{"id": 1, "benchmark": "medqa", "extracted": null, "gold": "A", "options": {"A": "x", "B": "y"}}\n'
        '{"id": 2, "benchmark": "medqa", "extracted": "A", "rule": "answer_tag", "gold": "A", "options": {"A": "x"}}\n'
        '{"id": 3, "bench')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="medr1.artifacts"):
        df = predictions_frame(read_predictions(path))
    assert df["rule"].tolist() == ["unparsed", "answer_tag"]  # no letter, no rule -> "unparsed"
    assert df["correct"].tolist() == [False, True]  # computed from letter vs gold when absent
    assert df["n_options"].tolist() == [2, 1]
    assert "truncated last line" in caplog.text


def test_load_results_falls_back_to_summaries_plus_reference(tmp_path):
    run = make_fake_run(tmp_path, train=False, results_csv=False)
    ref = tmp_path / "ref.yaml"
    ref.write_text("citation: Med-R1 README\nmodels:\n  - {model: Qwen2.5-7B-Instruct, accuracy: {medqa: 57.0}}\n")
    df = figures.load_results(run, reference=ref)
    ours = df[df["source"] == "measured here"]
    assert sorted(zip(ours["label"], ours["benchmark"], strict=True)) == [
        ("base", "medqa"), ("base", "pubmedqa"), ("trained", "medqa"), ("trained", "pubmedqa")]
    # no CI in summary.json: Wilson from n, around the estimate
    assert ((ours["ci_low"] <= ours["accuracy"]) & (ours["accuracy"] <= ours["ci_high"])).all()
    assert df.loc[df["source"] != "measured here", "accuracy"].tolist() == pytest.approx([0.57])


# --- figures -----------------------------------------------------------------------------------------


def test_training_curves_panels_and_legend():
    fig = figures_training.plot_training_curves(_metrics())
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "reward (mean per completion)", "reward std within group", "groups with zero\nreward std (%)"]
    assert fig.axes[-1].get_xlabel() == "training step"
    assert _legend_texts(fig) == ["total (weighted sum)", "accuracy", "answer_parsable"]
    # 30 steps -> rolling mean over 3: one faint raw line and one mean line per curve
    assert len(fig.axes[0].lines) == 6


def test_training_curves_show_groups_without_a_correctness_signal():
    # frac_accuracy_zero_std beside frac_reward_zero_std (issue 26: how much of the compute teaches anything)
    fig = figures_training.plot_training_curves(_metrics().assign(frac_accuracy_zero_std=np.linspace(0.6, 0.9, 30)))
    ax = fig.axes[2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all rewards equal", "all accuracy rewards equal"]
    assert max(ax.lines[-2].get_ydata()) == pytest.approx(90.0)  # the raw curve, in percent


def test_completion_length_with_and_without_clipped_ratio():
    fig = figures_training.plot_completion_length(_metrics())
    assert [ax.get_ylabel() for ax in fig.axes] == ["completion length (tokens)", "cut at max length (%)"]
    fig = figures_training.plot_completion_length(_metrics().drop(columns="clipped_ratio"))
    assert len(fig.axes) == 1


@pytest.mark.parametrize("kl, beta, drawn", [
    (True, 0.04, True),  # KL logged: a curve
    (False, 0.0, False),  # beta = 0: TRL logs no KL; the figure says so instead of a flat line
])
def test_kl(kl, beta, drawn):
    fig = figures_training.plot_kl(_metrics(kl=kl), beta=beta)
    ax = fig.axes[0]
    assert bool(ax.lines) is drawn
    assert f"beta = {beta:g}" in ax.get_title()
    if not drawn:
        assert "beta = 0" in ax.texts[0].get_text()


def test_accuracy_bars_legend_and_chance(tmp_path):
    results = figures.load_results(make_fake_run(tmp_path), reference=None)
    fig = figures_eval.plot_accuracy(results)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["medqa (n = 6)", "pubmedqa (n = 4)"]  # MMLU-Pro: not measured
    # medqa: 3 bars of ours + 2 published (MedQA and medqa match); pubmedqa: 1 of ours
    assert [len(ax.patches) for ax in axes] == [5, 1]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == [
        "base · strict", "trained · strict", "trained · huatuo", "HuatuoGPT-o1-8B", "Qwen2.5-7B-Instruct"]
    assert [p.get_hatch() or "" for p in axes[0].patches] == ["", "", "", "//", "//"]
    assert axes[0].patches[4].get_width() == pytest.approx(57.0)  # percent in, percent drawn
    chance = [ln.get_xdata()[0] for ax in axes for ln in ax.lines if ln.get_linestyle() == "--"]
    assert chance == pytest.approx([25.0, 100 / 3])
    legend = _legend_texts(fig)
    assert legend[:2] == ["measured here, strict scorer", "measured here, huatuo scorer"]
    assert "reported by Med-R1 README" in legend
    assert "chance (1 / number of options)" in legend
    assert all(ax.get_xlabel() == "accuracy (%)" for ax in axes)


def test_extraction_rules_shares():
    preds = {"base": pd.DataFrame(_prediction_rows(BASE_CORRECT, 2)),
             "trained": pd.DataFrame(_prediction_rows(TRAINED_CORRECT, 5))}
    fig = figures_eval.plot_extraction_rules(preds)
    ax = fig.axes[0]
    assert _legend_texts(fig) == ["answer_tag", "answer_statement", "none (unparsed)"]
    assert len(ax.patches) == 3 * 2  # one segment per rule and label
    widths = np.array([p.get_width() for p in ax.patches]).reshape(3, 2)
    assert widths.sum(axis=0) == pytest.approx([100, 100])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["base (n = 10)", "trained (n = 10)"]


def test_paired_counts_pair_by_id_not_row_order():
    base = _prediction_rows(BASE_CORRECT, 2)
    trained = _prediction_rows(TRAINED_CORRECT, 5)[::-1]  # reversed: ids must pair
    for rows, correct in ((base, BASE_CORRECT), (trained, TRAINED_CORRECT)):  # completions the scorer reads
        for r in rows:
            r["completion"] = f"<answer>{'A' if correct[r['benchmark']][int(r['id'].rsplit('-')[-1])] else 'B'}</answer>"
    table = paired_table(base, trained).set_index("benchmark")
    cells = ["both_right", "b10", "b01", "both_wrong"]
    # medqa: base 110001 vs trained 111110 -> both right 2, only base 1, only trained 3, both wrong 0
    assert table.loc["medqa", cells].tolist() == [2, 1, 3, 0]
    assert table.loc["medqa", "p_value"] == pytest.approx(0.625)  # exact binomial, 1 vs 3 discordant
    assert table.loc["pubmedqa", cells].tolist() == [2, 0, 1, 1]
    fig = figures_eval.plot_paired(table.reset_index())
    ax = fig.axes[0]
    assert len(ax.patches) == 4 * 2
    assert "McNemar p = 0.625" in ax.texts[-2].get_text()
    assert _legend_texts(fig) == ["both right", "only base right", "only trained right", "both wrong"]


def test_make_figure_one_at_a_time(tmp_path, caplog):
    run = make_fake_run(tmp_path, kl=True)
    assert isinstance(figures.make_figure(run, "kl"), Figure)
    assert sorted(p.name for p in (run / "figures").iterdir()) == ["kl.pdf", "kl.png"]
    with pytest.raises(ValueError, match="unknown figure"):
        figures.make_figure(run, "nope")


# --- make_all_figures ------------------------------------------------------------------------------


def test_make_all_figures_writes_png_and_pdf(tmp_path, caplog):
    run = make_fake_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="medr1.report.figures"):
        paths = figures.make_all_figures(run)
    names = ["training_curves", "completion_length", "accuracy", "extraction_rules", "letter_recall",
             "paired_base_vs_trained"]
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "pdf"))
    assert all(p.parent == run / "figures" and p.stat().st_size > 0 for p in paths)
    assert "skipped figure 'kl': no KL logged (beta = 0.0)" in caplog.text
    assert not plt.get_fignums()  # every figure closed after saving


@pytest.mark.parametrize("kwargs, made, skipped", [
    # nothing at all: every figure skipped, nothing written, no exception
    ({"train": False, "evaluate": False, "results_csv": False}, [],
     ["training_curves", "completion_length", "kl", "accuracy", "extraction_rules", "letter_recall",
      "paired_base_vs_trained", "paired_arms"]),
    # training only (evaluation not run yet), KL logged
    ({"evaluate": False, "results_csv": False, "kl": True}, ["training_curves", "completion_length", "kl"],
     ["accuracy", "extraction_rules", "letter_recall", "paired_base_vs_trained", "paired_arms"]),
    # evaluation only: accuracy comes from summary.json when results.csv is missing
    ({"train": False, "results_csv": False}, ["accuracy", "extraction_rules", "letter_recall", "paired_base_vs_trained"],
     ["training_curves", "completion_length", "kl", "paired_arms"]),
])
def test_make_all_figures_skips_missing_artifacts(tmp_path, caplog, kwargs, made, skipped):
    run = make_fake_run(tmp_path, **kwargs)
    with caplog.at_level(logging.WARNING, logger="medr1.report.figures"):
        paths = figures.make_all_figures(run, tmp_path / "out", reference=tmp_path / "absent.yaml")
    assert sorted({p.stem for p in paths}) == sorted(made)
    # a text run has no images: the two vision figures are skipped too, each saying so
    assert sorted(r.args[0] for r in caplog.records) == sorted([*skipped, "training_images", "image_predictions"])


def test_make_all_figures_skips_pairing_without_trained(tmp_path, caplog):
    run = make_fake_run(tmp_path, train=False)
    (run / "eval" / "trained" / "predictions.jsonl").unlink()
    with caplog.at_level(logging.WARNING, logger="medr1.report.figures"):
        paths = figures.make_all_figures(run)
    assert "paired_base_vs_trained" not in {p.stem for p in paths}
    assert "found ['base']" in caplog.text


def test_paired_arms_figure_pairs_the_other_arm(tmp_path):
    # the random-reward arm: the same fake run with its own name, pointed at by compare_run
    run = make_fake_run(tmp_path)
    shutil.copytree(run, run.parent / "arm-random")
    (run / "params.yaml").write_text((run / "params.yaml").read_text() + "compare_run: arm-random\n")
    fig = figures.make_figure(run, "paired_arms")
    assert isinstance(fig, Figure) and (run / "figures" / "paired_arms.png").is_file()
    assert "vs" in fig.axes[0].get_title() and any("trained: " in t.get_text() for t in fig.axes[0].get_yticklabels())


def test_make_all_figures_survives_an_empty_metrics_file(tmp_path, caplog):
    run = make_fake_run(tmp_path, evaluate=False, results_csv=False)
    (run / "train" / "metrics.csv").write_text("step,reward\n")  # header written, no step logged yet
    with caplog.at_level(logging.WARNING, logger="medr1.report.figures"):
        assert figures.make_all_figures(run) == []
    assert "has no rows yet" in caplog.text


# --- vision runs: images ---------------------------------------------------------------------------


def _vision_run(tmp_path: Path) -> Path:
    """A fake vision run: three training questions (one without an image) and base/trained predictions naming
    PNGs drawn here; the trained model answers the first question right and leaves the second unparsed."""
    from PIL import Image

    from medr1.data import Question

    run = make_fake_run(tmp_path, train=False, results_csv=False)
    images = []
    for i, colour in enumerate(("red", "green")):
        images.append(str(tmp_path / f"img{i}.png"))
        Image.new("RGB", (8, 8), colour).save(images[-1])
    pool = [Question(f"t{i}", "Which colour?", {"A": "red", "B": "green"}, "AB"[i], "vqa_train",
                     meta={"modality": "CT"}, images=(path,)) for i, path in enumerate(images)]
    pool.insert(1, Question("text", "No image here?", {"A": "yes", "B": "no"}, "A", "vqa_train"))
    _write_jsonl(run / "data" / "train_pool.jsonl", [q.to_dict() for q in pool])
    for label, answers in (("base", ["B", "B"]), ("trained", ["A", None])):
        rows = [{"id": f"q{i}", "benchmark": "vqa_test", "shift": 0, "gold": "AB"[i], "extracted": x,
                 "correct": x == "AB"[i], "rule": "answer_tag" if x else "none", "options": {"A": "red", "B": "green"},
                 "completion": f"Answer: {x}", "images": [images[i]], "modality": "MRI"}
                for i, x in enumerate(answers)]
        rows.insert(1, {**rows[0], "shift": 1, "gold": "B", "extracted": "B"})  # another rotation: not shown again
        _write_jsonl(run / "eval" / label / "predictions.jsonl", rows)
    return run


def test_image_figures_of_a_vision_run(tmp_path):
    run = _vision_run(tmp_path)
    fig = figures.make_figure(run, "training_images")
    # the question without an image is not shown; each panel says modality, gold letter and its text
    assert [ax.get_title() for ax in fig.axes] == ["CT: gold A\n(red)", "CT: gold B\n(green)"]
    assert [tuple(ax.images[0].get_array()[0, 0]) for ax in fig.axes] == [(255, 0, 0), (0, 128, 0)]
    fig = figures.make_figure(run, "image_predictions")
    assert fig.get_suptitle() == "Evaluated questions and the answers of 'trained'"  # trained before base
    assert [ax.get_title() for ax in fig.axes] == ["MRI: gold A,\nanswered A", "MRI: gold B,\nanswered unparsed"]
    assert sorted(p.name for p in (run / "figures").glob("*.png")) == ["image_predictions.png", "training_images.png"]


def test_image_figures_skip_text_runs_and_moved_images(tmp_path, caplog):
    run = _vision_run(tmp_path)
    (tmp_path / "img0.png").unlink()
    text_run = make_fake_run(tmp_path, "text")
    with caplog.at_level(logging.WARNING, logger="medr1.report.figures"):
        assert figures.make_figure(run, "training_images") is None
        assert figures.make_figure(text_run, "image_predictions") is None
    assert "image(s) not found (was the data moved?)" in caplog.text and "img0.png" in caplog.text
    assert "no prediction with an image" in caplog.text


# --- training checks (notebook 03) ----------------------------------------------------------------


def test_collapse_episodes_are_the_steps_the_training_figure_shades():
    metrics = _metrics(12).assign(step=lambda m: 5 * m["step"],  # logged every 5 steps
                                  answer_top_share=[0.5, 0.9, 0.95, 0.9, 0.85, 0.9, 0.4, 0.9, 0.9, 0.9, 0.9, 0.5])
    assert training_checks.collapse_episodes(metrics) == [(10, 30)]  # 5 in a row from the 2nd; 4 is too short
    fig = figures_training.plot_training_curves(metrics)
    bands = [p.get_x() for p in fig.axes[0].patches]  # one red band per episode, on every panel
    assert bands == [9.5] and fig.axes[0].patches[0].get_width() == pytest.approx(21)
    assert training_checks.collapse_episodes(_metrics(3)) == []  # column not logged


@pytest.mark.parametrize("best_step, select, expected", [
    (10, "validation", 10), (10, "last", "last"), (None, "validation", "last")])
def test_selected_step_and_validation_table(tmp_path, best_step, select, expected):
    train = tmp_path / "train"
    train.mkdir()
    assert training_checks.validation_table(tmp_path).empty  # validation_every: 0
    (train / "validation.csv").write_text("step,accuracy,answer_top_share\n0,0.25,0.5\n10,0.5,0.4\n20,0.3,0.9\n")
    if best_step is not None:
        (train / "best_adapter").mkdir()
        (train / "best_adapter" / "best.json").write_text(json.dumps({"step": best_step, "row": {}}))
    assert training_checks.validation_table(tmp_path)["step"].tolist() == [0, 10, 20]
    assert training_checks.selected_step(tmp_path, select) == expected


def test_save_and_copy_to_report(tmp_path):
    fig, _ = plt.subplots()
    paths = figures.save_figure(fig, tmp_path / "run_figs", "demo")
    assert [p.name for p in paths] == ["demo.png", "demo.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    copied = figures.copy_to_report(paths, tmp_path / "report")
    assert [p.name for p in copied] == ["demo.png"]  # PNGs only: PDFs stay with the run


def test_figures_never_imports_model_code():
    code = "import sys, medr1.report.figures; print(sorted(m for m in ('torch', 'medr1.train', 'medr1.evaluation.evaluate', " \
           "'medr1.generation') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- notebook --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_runs_headless_on_a_fake_run(tmp_path):
    make_fake_run(tmp_path / "runs", "fake")
    out = tmp_path / "out.ipynb"
    papermill = Path(sys.executable).with_name("papermill")
    subprocess.run([str(papermill), str(REPO_ROOT / "notebooks" / "05_figures.ipynb"), str(out),
                    "-p", "runs_dir", str(tmp_path / "runs"), "-p", "run_name", "fake",
                    "--cwd", str(REPO_ROOT), "-k", "python3"],
                   check=True, capture_output=True, text=True, timeout=300)
    cells = json.loads(out.read_text())["cells"]
    images = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    # one per figure made: training curves, length, accuracy, rules, letter recall, paired (beta = 0: no KL)
    assert len(images) == 6
    assert sorted(p.name for p in (tmp_path / "runs" / "fake" / "figures").glob("*.png")) == sorted(
        f"{n}.png" for n in ("training_curves", "completion_length", "accuracy", "extraction_rules",
                             "letter_recall", "paired_base_vs_trained"))


# --- legible at the saved size (issue 25, item 7) ------------------------------------------------------


def _report_run(tmp_path: Path) -> Path:
    """A fake run whose results.csv is written by `write_results` from its summaries and the real
    params/reference_results.yaml: long comparability verdicts, every published row, a protocol unknown."""
    from medr1.report.results import write_results

    run = make_fake_run(tmp_path, results_csv=False, kl=True)
    shutil.copytree(run, run.parent / "fake-random")  # the other arm of the experiment, for paired_arms
    (run / "params.yaml").write_text((run / "params.yaml").read_text() + "compare_run: fake-random\n")
    write_results(run)
    return run


VISION_FIGURES = ("training_images", "image_predictions")


def test_every_report_figure_prints_no_text_over_another(tmp_path):
    from medr1.report.style import text_overlaps

    run, vision = _report_run(tmp_path / "text"), _vision_run(tmp_path / "vision")
    for name in figures.FIGURE_NAMES:
        fig = figures.make_figure(vision if name in VISION_FIGURES else run, name, tmp_path / "figs")
        assert fig is not None, name
        assert text_overlaps(fig) == [], name


@pytest.mark.parametrize("n_rows", [1, 3])
def test_paired_figure_keeps_its_legend_off_the_axis_label(n_rows):
    # One row is the fit check's figure (a two-line label): its legend once sat on the axis label.
    from medr1.report.eval_figures import plot_paired
    from medr1.report.style import text_overlaps

    table = pd.DataFrame({"benchmark": ["fit", "medqa", "medmcqa"][:n_rows], "a": "base", "b": "trained", "n": 8,
                          "both_right": 0, "b10": 0, "b01": 6, "both_wrong": 2, "acc_a": 0.0, "acc_b": 75.0,
                          "p_value": 0.03125})
    assert text_overlaps(plot_paired(table)) == []


def test_letter_recall_of_the_fit_check_alone_is_legible():
    # One panel with the fit check's long title: it once spilled over the axis label, the legend over the bars.
    from medr1.report.eval_figures import plot_letter_recall
    from medr1.report.style import text_overlaps

    frame = pd.DataFrame({"benchmark": "fit", "id": [str(i) for i in range(10)], "gold": list("ABCDEABCDE"),
                          "extracted": list("ABCDEEDCBA"), "correct": [True] * 5 + [False] * 5})
    assert text_overlaps(plot_letter_recall({"base": frame, "trained": frame})) == []


def test_accuracy_figure_notes_comparability_and_unknown_protocols(tmp_path):
    from medr1.report.style import drawn_texts

    fig = figures.make_figure(_report_run(tmp_path), "accuracy", tmp_path / "figs")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "base · strict [1]" in labels and "Med-R1-α-8B (protocol unknown)" in labels
    texts = "\n".join(t.get_text() for t in drawn_texts(fig))
    assert "[1] not comparable: protocol medr1 (ours); the published numbers used huatuo-o1" in texts
    assert "protocol unknown: the source released a results image" in texts


def test_text_overlaps_catches_tick_labels_printed_over_each_other():
    from medr1.report.style import text_overlaps

    fig, ax = plt.subplots(figsize=(3, 1.2))
    ax.set_yticks(range(6), [f"a long label {i}\nwith a second line" for i in range(6)])
    assert any("overlaps" in p for p in text_overlaps(fig))
