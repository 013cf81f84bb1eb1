"""Tests for medr1/train/validation.py: greedy validation during training and the checkpoint it selects.

Fast: verdicts and bias numbers of greedy answers, the selection order, cutting back to a resume point.
Slow: a two-step run on the embedded model that validates at steps 0, 1, 2 and adopts the selected adapter.
"""

from __future__ import annotations

import json

import pytest
from helpers import small_params

from medr1.data import Question
from medr1.train.validation import (
    BEST_ADAPTER,
    BEST_FILE,
    VALIDATION_CSV,
    _append_row,
    read_best,
    read_validation,
    score_answers,
    selection_key,
    truncate_validation,
    validation_counts,
    validation_rows,
)


def _q(i, n=4, answer="A"):
    return Question(f"q{i}", f"Q{i}?", {L: f"text {L}{i}" for L in "ABCDE"[:n]}, answer, "toy")


def test_rows_rotate_and_cut_like_training():
    questions = [_q(i, 5, "ABCDE"[i % 5]) for i in range(12)]
    asked = validation_rows(questions, permutations=2, option_counts=[3, 4], seed=0)
    assert len(asked) == 24  # two rotations each
    assert {len(q.options) for _, q in asked} == {3, 4}
    for qid, q in asked:
        original = next(x for x in questions if x.id == qid)
        assert q.options[q.answer] == original.options[original.answer]  # gold follows its text
    assert asked == validation_rows(questions, permutations=2, option_counts=[3, 4], seed=0)  # same every pass


def test_rows_leave_out_questions_with_fewer_options_than_asked():
    questions = [_q(0, 5), _q(1, 2), _q(2, 4), _q(3, 3)]  # q1: a true/false item; q3: three options
    asked = validation_rows(questions, permutations=2, option_counts=[4], seed=0)
    assert sorted({qid for qid, _ in asked}) == ["q0", "q2"]
    assert {len(q.options) for _, q in asked} == {4}
    assert {qid for qid, _ in validation_rows(questions, permutations=1, option_counts=[], seed=0)} == {
        "q0", "q1", "q2", "q3"}  # no counts: every question as written


def test_always_a_scores_a_quarter_and_nothing_consistently():
    questions = [_q(i, 4, "ABCD"[i % 4]) for i in range(8)]
    asked = validation_rows(questions, permutations=4, option_counts=[], seed=0)
    always_a = score_answers(asked, ["Answer: A"] * len(asked))
    assert (always_a["accuracy"], always_a["consistent_accuracy"], always_a["answer_top_share"]) == (0.25, 0.0, 1.0)
    by_text = score_answers(asked, [f"Answer: {q.answer}" for _, q in asked])
    assert (by_text["accuracy"], by_text["consistent_accuracy"], by_text["parse_rate"]) == (1.0, 1.0, 1.0)
    silent = score_answers(asked, ["I cannot say"] * len(asked))
    assert (silent["accuracy"], silent["parse_rate"]) == (0.0, 0.0)


def _row(top, parse, consistent=0.0, accuracy=0.25):
    return {"answer_top_share": top, "parse_rate": parse, "consistent_accuracy": consistent, "accuracy": accuracy}


@pytest.mark.parametrize("better, worse", [
    (_row(0.5, 0.9), _row(0.9, 1.0, 0.5, 0.6)),   # not collapsed beats collapsed, whatever its accuracy
    (_row(0.5, 0.8), _row(0.5, 0.7, 0.4, 0.6)),   # parsing as well as the untrained policy comes next
    (_row(0.5, 0.9, 0.2), _row(0.4, 0.9, 0.1)),   # then consistent accuracy
    (_row(0.4, 0.9), _row(0.5, 0.9)),             # and at equal accuracy, the less letter-bound
])
def test_selection_order(better, worse):
    assert selection_key(better, 0.8) > selection_key(worse, 0.8)


def test_truncate_validation_drops_later_rows_and_a_lost_best(tmp_path):
    for step in (0, 5, 10):
        _append_row(tmp_path / VALIDATION_CSV, {"step": step, **_row(0.5, 0.9), "n_rows": 4})
    best = tmp_path / BEST_ADAPTER
    best.mkdir()
    (best / BEST_FILE).write_text(json.dumps({"step": 10, "row": {}}))
    truncate_validation(tmp_path, 10)
    assert [r["step"] for r in read_validation(tmp_path / VALIDATION_CSV)] == [0, 5, 10]
    assert read_best(tmp_path)["step"] == 10
    truncate_validation(tmp_path, 7)  # resumed from checkpoint-7: step 10's adapter is gone with that session
    assert [r["step"] for r in read_validation(tmp_path / VALIDATION_CSV)] == [0, 5]
    assert read_best(tmp_path) is None


@pytest.mark.slow
def test_validation_counts_default_to_the_trainings(tmp_path):
    from medr1.config import ParamsError

    assert validation_counts(small_params(tmp_path, train_option_counts=[3, 4, 5])) == [3, 4, 5]
    assert validation_counts(small_params(tmp_path, train_option_counts=[3, 4, 5], validation_option_counts=[4])) == [4]
    assert validation_counts(small_params(tmp_path)) == []  # [] = as written
    with pytest.raises(ParamsError, match="validation_option_counts"):
        small_params(tmp_path, validation_option_counts=[1])


def test_training_validates_and_adopts_the_selected_adapter(tmp_path):
    from medr1.train import train

    params = small_params(tmp_path, validation_size=4, validation_every=1, select_checkpoint="validation")
    result = train(params, progress=False)
    train_dir = result.run_dir / "train"
    rows = read_validation(train_dir / VALIDATION_CSV)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["n_questions"] == 4 and 0 <= r["answer_top_share"] <= 1 for r in rows)
    best = read_best(train_dir)
    assert best["step"] in (1, 2)  # step 0 is the reference, not a candidate
    kept = (train_dir / BEST_ADAPTER / "adapter_model.safetensors").read_bytes()
    assert (train_dir / "adapter" / "adapter_model.safetensors").read_bytes() == kept
    job = json.loads((result.run_dir / "manifest.json").read_text())["jobs"]["train"]
    assert job["selected_checkpoint"]["step"] == best["step"]
