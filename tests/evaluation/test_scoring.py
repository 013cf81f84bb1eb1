"""Tests for medr1.evaluation.scoring: the same completions under the `strict` and `huatuo` scorers.

The huatuo expectations were derived by hand from the rules in the module docstring (and agree with
HuatuoGPT-o1's own `match_choice` on these inputs); the strict ones follow the policy of
`medr1.task.answers.extract_choice_with_rule`.
"""

from __future__ import annotations

import math

import pytest

from medr1.evaluation.scoring import SCORERS, HuatuoMatch, ScoreResult, huatuo_extract, score

DRUGS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Clopidogrel"}
PUBMEDQA = {"A": "yes", "B": "no", "C": "maybe"}
TEN = {k: f"drug {k.lower()}x" for k in "ABCDEFGHIJ"}  # MMLU-Pro has 10 options, so "I" is a letter

# (completion, options, strict (letter, rule), huatuo (first, last, rule))
CASES = [
    # Our tag format: huatuo's first stand-alone capital is the "A" inside <think>, its last the answer.
    ("<think>A?</think><answer>B</answer>", DRUGS, ("B", "answer_tag"), ("A", "B", "letter")),
    # A revised statement: strict takes the last; huatuo keeps both ends for step 6.
    ("The answer is B. Wait, the answer is C.", DRUGS, ("C", "answer_statement"), ("B", "C", "answer_is")),
    # No answer at all: strict says unparsed; huatuo's fuzzy rule guesses (all similarities 0 -> last).
    ("??", DRUGS, (None, "none"), ("D", "D", "fuzzy")),
    # A misspelt option: strict does not guess; the fuzzy rule picks the nearest option text.
    ("asprin", DRUGS, (None, "none"), ("A", "A", "fuzzy")),
    # Two letters in the answer tag: strict calls it ambiguous; huatuo skips "A " (article rule) -> B.
    ("<answer>A or B</answer>", DRUGS, (None, "ambiguous"), ("B", "B", "letter")),
    # A letter outside the options: both end up wrong, huatuo because [A-N] is not the option range.
    ("The answer is E", DRUGS, (None, "not_an_option"), ("E", "E", "answer_is")),
    # The option's text after "answer is": strict reads Heparin = B; huatuo reads its capital H.
    ("The answer is Heparin", DRUGS, ("B", "answer_statement"), ("H", "H", "answer_is")),
    # Cut off while thinking: strict says truncated; huatuo takes the last capital letter.
    ("<think>long reasoning, leaning to A", DRUGS, (None, "truncated"), ("A", "A", "letter")),
    # A colon breaks huatuo's "answer is" pattern; the stand-alone letter rule still finds B.
    ("The answer is: B", DRUGS, ("B", "answer_statement"), ("B", "B", "letter")),
    # Any stand-alone capital is an answer for huatuo.
    ("Type B hepatitis", DRUGS, (None, "none"), ("B", "B", "letter")),
    # Adjacent letters: the "," consumed after A hides B from huatuo's scan.
    ("A,B", DRUGS, (None, "none"), ("A", "A", "letter")),
    # Two options named: strict refuses; huatuo's "first" is the option whose FIRST mention is latest
    # (heparin, at 14) although aspirin came first (quirk), its "last" the latest mention (aspirin).
    ("aspirin, then heparin, then aspirin again", DRUGS, (None, "ambiguous"), ("B", "A", "option_text")),
    # One option's text: both scorers agree.
    ("The evidence says yes", PUBMEDQA, ("A", "option_text"), ("A", "A", "option_text")),
    # HuatuoGPT-o1's own format: only what follows the last "## Final Response" heading is read.
    (
        "The answer is A.\n## Final Response\n\nThe answer is B.",
        DRUGS,
        ("B", "answer_statement"),
        ("B", "B", "answer_is"),
    ),
    # The pronoun "I" is option I on a 10-option question (huatuo), not on a 4-option one (next case).
    ("I think the answer is obvious: C", TEN, (None, "none"), ("I", "C", "letter")),
    ("I think the answer is obvious: C", DRUGS, (None, "none"), ("C", "C", "letter")),
]


def _row(completion, options, gold="A", benchmark="bench", id_="q", **extra):
    return {
        "id": id_,
        "benchmark": benchmark,
        "options": options,
        "gold": gold,
        "completion": completion,
        **extra,
    }


@pytest.mark.parametrize("completion, options, strict, huatuo", CASES)
def test_extraction_per_scorer(completion, options, strict, huatuo):
    strict_row = score([_row(completion, options)], "strict").rows[0]
    assert (strict_row.letter, strict_row.rule) == strict
    assert huatuo_extract(completion, options) == HuatuoMatch(*huatuo)


def test_fuzzy_fallback_answers_what_strict_leaves_unparsed():
    rows = [
        _row("??", DRUGS, gold="D", id_="q1"),  # fuzzy picks the last option, which happens to be gold
        _row("hard to say", PUBMEDQA, gold="C", id_="q2"),  # closest option text is "maybe"
        _row("<answer>B</answer>", DRUGS, gold="B", id_="q3"),  # parsed by both
    ]
    strict, huatuo = score(rows, "strict").benchmarks["bench"], score(rows, "huatuo").benchmarks["bench"]
    assert (strict.n, strict.n_correct, strict.unparsed) == (3, 1, 2)
    assert strict.by_rule == {"none": 2, "answer_tag": 1}
    assert (huatuo.n, huatuo.n_correct, huatuo.unparsed) == (3, 3, 0)
    assert huatuo.by_rule == {"fuzzy": 2, "letter": 1}


def test_huatuo_reports_the_better_of_first_and_last_per_benchmark():
    rows = [
        # bench "x": first-match is right on both rows, last-match on one -> first selected, 2/2.
        _row("The answer is A. Later: the answer is B.", DRUGS, gold="A", benchmark="x", id_="1"),
        _row("The answer is C.", DRUGS, gold="C", benchmark="x", id_="2"),
        # bench "y": last-match is right on both rows, first-match on none -> last selected, 2/2.
        _row("The answer is A. No: the answer is D.", DRUGS, gold="D", benchmark="y", id_="3"),
        _row("The answer is B. No: the answer is C.", DRUGS, gold="C", benchmark="y", id_="4"),
        # bench "z": one row each way -> tie 1/2 vs 1/2, their strict ">" reports "last".
        _row("The answer is A. No: the answer is B.", DRUGS, gold="A", benchmark="z", id_="5"),
        _row("The answer is A. No: the answer is B.", DRUGS, gold="B", benchmark="z", id_="6"),
    ]
    result = score(rows, "huatuo")
    x, y, z = (result.benchmarks[b] for b in "xyz")
    assert (x.accuracy_first, x.accuracy_last, x.selected, x.accuracy) == (1.0, 0.5, "first", 1.0)
    assert (y.accuracy_first, y.accuracy_last, y.selected, y.accuracy) == (0.0, 1.0, "last", 1.0)
    assert (z.accuracy_first, z.accuracy_last, z.selected, z.accuracy) == (0.5, 0.5, "last", 0.5)
    # Per-row verdicts follow the selected side, so they add up to the reported accuracy.
    assert [v.letter for v in result.rows] == ["A", "C", "D", "C", "B", "B"]
    assert [v.correct for v in result.rows] == [True, True, True, True, False, True]
    # The strict scorer has no second chance: it reads the last statement everywhere.
    strict = score(rows, "strict")
    assert [strict.benchmarks[b].accuracy for b in "xyz"] == [0.5, 1.0, 0.5]


def test_huatuo_drops_empty_outputs_strict_counts_them_wrong():
    rows = [
        _row("", DRUGS, id_="1"),  # empty generation
        _row(" </s>", DRUGS, id_="2"),  # empty once eval.py strips "</s>" and one leading space
        _row("The answer is A", DRUGS, id_="3"),
    ]
    huatuo = score(rows, "huatuo")
    h = huatuo.benchmarks["bench"]
    assert (h.n, h.n_dropped, h.n_correct, h.accuracy) == (1, 2, 1, 1.0)
    assert [(v.counted, v.rule) for v in huatuo.rows[:2]] == [(False, "dropped_empty")] * 2
    s = score(rows, "strict").benchmarks["bench"]
    assert (s.n, s.n_dropped, s.n_correct, s.unparsed) == (3, 0, 1, 2)


def test_k_samples_majority_vote():
    rows = [
        # strict: B, None, B, A -> B (unparsed sample does not vote).
        {
            "id": "1",
            "benchmark": "b",
            "options": DRUGS,
            "gold": "B",
            "completions": ["<answer>B</answer>", "??", "<answer>B</answer>", "<answer>A</answer>"],
        },
        # tie A vs C: the letter sampled first (C) wins in both scorers.
        {
            "id": "2",
            "benchmark": "b",
            "options": DRUGS,
            "gold": "A",
            "completions": ["The answer is C", "The answer is A", "The answer is A", "The answer is C"],
        },
    ]
    strict = score(rows, "strict")
    assert [(v.letter, v.correct) for v in strict.rows] == [("B", True), ("C", False)]
    assert strict.rows[0].sample_letters == ("B", None, "B", "A")
    assert strict.rows[0].rule == "answer_tag"  # the rule of the first sample that gave the voted letter
    huatuo = score(rows, "huatuo")
    # huatuo: "??" votes D by fuzzy match, so row 1 is B 2 / D 1 / A 1 -> B.
    assert [(v.letter, v.correct) for v in huatuo.rows] == [("B", True), ("C", False)]
    assert huatuo.rows[0].sample_letters == ("B", "D", "B", "A")


def test_score_result_shapes_for_evaluation_and_stats():
    rows = [
        _row("<answer>A</answer>", DRUGS, benchmark="b1", id_="1"),
        _row("<answer>C</answer>", DRUGS, benchmark="b2", id_="1"),  # same id, other benchmark: fine
        _row("nothing", DRUGS, benchmark="b1", id_="2"),
    ]
    for name in SCORERS:
        result = score(rows, name)
        assert isinstance(result, ScoreResult) and result.scorer == name
        assert list(result.benchmarks) == ["b1", "b2"]
        frame = result.frame()
        assert list(frame[["benchmark", "id"]].itertuples(index=False, name=None)) == [
            ("b1", "1"),
            ("b2", "1"),
            ("b1", "2"),
        ]
        for b in result.benchmarks.values():
            assert sum(b.by_rule.values()) == b.n
            assert b.n_correct == frame[(frame.benchmark == b.benchmark) & frame.counted].correct.sum()
        assert {s["benchmark"] for s in result.summary()} == {"b1", "b2"}


def test_empty_predictions_and_nan_accuracy():
    assert score([], "strict").benchmarks == {}
    only_empty = score([_row("", DRUGS)], "huatuo").benchmarks["bench"]
    assert only_empty.n == 0 and math.isnan(only_empty.accuracy)


BAD_INPUTS = [
    # (rows, message fragment)
    ([{"id": "1", "benchmark": "b", "options": DRUGS, "completion": "A"}], "lacks"),  # no gold
    ([_row("A", DRUGS, gold="E")], "not one of"),  # gold is not an option
    ([_row("A", {})], "non-empty"),  # no options
    ([{"id": "1", "benchmark": "b", "options": DRUGS, "gold": "A"}], "completion"),  # no completion
    ([{**_row("A", DRUGS), "completions": "A"}], "list"),  # a string where a list of samples belongs
    ([{**_row("A", DRUGS), "completions": []}], "non-empty"),  # zero samples
    ([_row("A", DRUGS), _row("B", DRUGS)], "duplicate"),  # same (benchmark, id) twice
]


@pytest.mark.parametrize("rows, message", BAD_INPUTS)
@pytest.mark.parametrize("scorer", sorted(SCORERS))
def test_malformed_rows_raise(rows, message, scorer):
    with pytest.raises(ValueError, match=message):
        score(rows, scorer)


def test_unknown_scorer():
    with pytest.raises(ValueError, match="unknown scorer"):
        score([], "lenient")
