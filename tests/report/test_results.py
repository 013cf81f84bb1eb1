"""Tests for medr1.report.results: provenance labels, reference rows, paired comparisons, written files."""

from __future__ import annotations

import json

import pytest

from medr1.artifacts import read_reference
from medr1.paths import REPO_ROOT
from medr1.report.results import (
    MEASURED,
    REPORTED,
    answer_distribution,
    category_breakdown,
    paired_comparison,
    results_section,
    results_table,
    write_results,
)

REFERENCE = REPO_ROOT / "params" / "reference_results.yaml"
OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}


def _write_eval(run, label, answers, golds, adapter=None):
    """An eval directory as medr1.evaluation.evaluate writes it: predictions plus a summary computed from them."""
    from medr1.evaluation.summary import score_predictions

    d = run / "eval" / label
    d.mkdir(parents=True)
    rows = [{"id": str(i), "benchmark": "pubmedqa", "options": OPTIONS, "gold": g,
             "completion": f"<answer>{a}</answer>"} for i, (a, g) in enumerate(zip(answers, golds, strict=True))]
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"model": "org/model", "adapter": adapter, "settings": {"split": "test"},
               "scores": score_predictions(rows, ["strict", "huatuo"])}
    (d / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    golds = ["A", "B", "C", "A"] * 5
    _write_eval(run, "base", ["B"] * 20, golds)                       # right on the 5 "B" questions
    # Right on the first 16 and on the "C" among the last four (A, B, C, A): 17 of 20.
    _write_eval(run, "trained", golds[:16] + ["C"] * 4, golds, "x")
    return run


def test_reference_file_has_the_required_models():
    ref = read_reference(REFERENCE)
    names = [m["model"] for m in ref["models"]]
    for required in ("Med-R1-α-8B", "HuatuoGPT-o1-8B (SFT only)", "HuatuoGPT-o1-8B (SFT + RL)",
                     "Llama-3.1-8B-Instruct", "Qwen2.5-7B-Instruct"):
        assert required in names
    assert "Med-R1" in ref["citation"] and "medqa" in ref["eval_sets"]


def test_measured_and_reported_rows_are_labelled(run):
    df = results_table([run], REFERENCE)
    ours, theirs = df[df.provenance == MEASURED], df[df.provenance == REPORTED]
    assert set(df.provenance) == {MEASURED, REPORTED}
    # Ours: one row per label x scorer, with n and an interval around the accuracy.
    assert len(ours) == 4 and set(ours.scorer) == {"strict", "huatuo"}
    trained = ours[(ours.label == "trained") & (ours.scorer == "strict")].iloc[0]
    assert trained.accuracy == pytest.approx(85.0) and trained.n == 20
    assert trained.ci_low <= 85.0 <= trained.ci_high
    # Theirs: the published number, its citation and eval set, no n and no interval.
    row = theirs[(theirs.model == "Med-R1-α-8B") & (theirs.benchmark == "medqa")].iloc[0]
    assert row.accuracy == 71.5 and "Med-R1" in row.source and "1,273" in row.eval_set
    assert theirs.ci_low.isna().all() and theirs.n.isna().all()


def test_results_table_accepts_summary_dicts():
    summary = {"model": "m", "scores": {"strict": {"medqa": {"accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                                                             "n": 100, "unparsed": 3}}}}
    df = results_table(summary)
    assert df.iloc[0].provenance == MEASURED and df.iloc[0].accuracy == 50.0


def test_paired_comparison(run):
    df = paired_comparison(run, "base", "trained", "strict")
    row = df.iloc[0]
    assert (row.n, row.acc_a, row.acc_b) == (20, 25.0, 85.0)
    assert row.difference == pytest.approx(60.0)
    # b10 (base right, trained wrong): the "B" among the last four. b01: trained's 17 minus the 4 "B"s
    # among the first 16 that base also got.
    assert (row.b01, row.b10) == (13, 1)
    assert row.p_value < 0.01 and row.diff_low > 0


def test_paired_comparison_needs_both(run):
    with pytest.raises(FileNotFoundError, match="evaluate it first"):
        paired_comparison(run, "base", "missing")


def test_write_results(run):
    write_results(run, REFERENCE)
    md = (run / "results.md").read_text()
    assert "## Measured here" in md and "## Reported by others (not measured here)" in md
    assert "Paired comparison: trained vs base" in md and "Qwen2.5-7B-Instruct" in md
    csv = (run / "results.csv").read_text()
    assert MEASURED in csv and REPORTED in csv


def test_results_section_shows_one_idea_of_results_md(run):
    write_results(run, REFERENCE)
    paired = results_section(run, "Paired comparison")  # one section per scorer: both, in file order
    assert paired.startswith("### Paired comparison: trained vs base (strict scorer)")
    assert "### Paired comparison: trained vs base (huatuo scorer)" in paired and "## Letter bias" not in paired
    assert results_section(run, "Letter bias").count("###") == 1
    assert results_section(run, "Accuracy per") == '*No "Accuracy per" section in results.md: not measured in this run.*'


def test_answer_distribution_exposes_a_constant_answer(tmp_path):
    run = tmp_path / "run"
    golds = ["A", "A", "A", "B", "C"]
    _write_eval(run, "collapsed", ["A"] * 5, golds)  # answers A to everything: 60 % = the share of gold A
    _write_eval(run, "varied", ["A", "B", "A", "B", ""], golds)  # the empty answer is unparsed
    table = answer_distribution(run).set_index("label")
    assert table.loc["collapsed", ["most_common_answer", "share", "constant_answer_baseline", "distinct_answers"]
                     ].tolist() == ["A", 100.0, 60.0, 1]
    assert table.loc["varied", ["most_common_answer", "share", "distinct_answers"]].tolist() == ["A", 40.0, 2]
    write_results(run)
    assert "## Answer distribution" in (run / "results.md").read_text()


def test_category_breakdown_only_where_questions_carry_one(tmp_path):
    run = tmp_path / "run"
    d = run / "eval" / "base"
    d.mkdir(parents=True)
    rows = [{"id": str(i), "benchmark": "mmlu", "options": OPTIONS, "gold": "A", "completion": "A",
             "extracted": "A" if i < 3 else "B", "correct": i < 3, "category": "anatomy" if i < 4 else "virology"}
            for i in range(6)]
    rows.append({"id": "p", "benchmark": "pubmedqa", "options": OPTIONS, "gold": "A", "completion": "A",
                 "extracted": "A", "correct": True})  # no category: not in the breakdown
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = category_breakdown(run).set_index("category")
    assert table.loc["anatomy", ["n", "accuracy"]].tolist() == [4, 75.0]  # 3 of 4 right
    assert table.loc["virology", ["n", "accuracy"]].tolist() == [2, 0.0]
    assert set(table["benchmark"]) == {"mmlu"}


def test_modality_breakdown_reaches_results_md(tmp_path):
    # a visual benchmark's summary carries by_modality (medr1.evaluation.summary.modality_scores); results show it
    from medr1.report.results import modality_breakdown, write_results

    out = tmp_path / "run" / "eval" / "trained"
    out.mkdir(parents=True)
    block = {"MRI": {"n": 4, "n_correct": 3, "accuracy": 0.75, "ci_low": 0.25, "ci_high": 1.0},
             "CT": {"n": 2, "n_correct": 0, "accuracy": 0.0, "ci_low": 0.0, "ci_high": 0.0}}
    (out / "summary.json").write_text(json.dumps({"model": "m", "scores": {}, "by_modality": {"strict": {"vqa": block}}}))
    table = modality_breakdown(tmp_path / "run")
    assert table[["modality", "n", "accuracy"]].values.tolist() == [["MRI", 4, 75.0], ["CT", 2, 0.0]]
    write_results(tmp_path / "run", None)
    md = (tmp_path / "run" / "results.md").read_text()
    assert "## Accuracy per imaging modality" in md and "| trained | vqa | strict | MRI | 4 | 75.0 |" in md
    assert (tmp_path / "run" / "results_by_modality.csv").is_file()


def test_answer_examples_split_every_row_once(tmp_path):
    from medr1.report.results import answer_examples

    d = tmp_path / "eval" / "trained"
    d.mkdir(parents=True)
    rows = [{"id": "1", "benchmark": "b", "gold": "A", "extracted": "A", "correct": True, "completion": "A"},   # right
            {"id": "2", "benchmark": "b", "gold": "A", "extracted": "B", "correct": False, "completion": "B"},  # wrong
            {"id": "3", "benchmark": "b", "gold": "A", "extracted": None, "correct": False, "completion": "?"},  # none
            {"id": "4", "benchmark": "b", "gold": "B", "extracted": "B", "correct": True, "completion": "B"}]   # right
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = answer_examples(tmp_path, "trained")
    assert {k: v["id"].tolist() for k, v in examples.items()} == {"right": ["1", "4"], "wrong": ["2"], "unparsed": ["3"]}
    assert list(examples["right"].columns) == ["benchmark", "id", "gold", "extracted", "completion"]  # no `rule` here
    assert all(v.empty for v in answer_examples(tmp_path, "absent").values())
