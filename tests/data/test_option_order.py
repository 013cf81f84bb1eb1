"""Tests for medr1.data.option_order: shuffled training draws and evaluation rotations keep every answer right."""

from __future__ import annotations

import random

import pytest

from medr1.data import LETTERS, Question
from medr1.data.option_order import (
    cyclic_shift,
    eval_shifts,
    gold_letter_shares,
    keep_options,
    permute_options,
    refers_to_other_options,
    shuffle_report,
    training_draws,
)


def _q(i, n=4, answer="A", texts=None):
    texts = texts or [f"text {j} of q{i}" for j in range(n)]
    return Question(f"q{i}", f"Question {i}?", dict(zip(LETTERS, texts, strict=False)), answer, "toy")


def _skewed_pool(n_questions=200, seed=0):
    """A pool of 3-, 4- and 5-option questions whose gold is mostly "A" (the bias shuffling must remove),
    with a few letter-referring questions mixed in."""
    rng = random.Random(seed)
    pool = []
    for i in range(n_questions):
        n = (3, 4, 5)[i % 3]
        answer = "A" if rng.random() < 0.7 else LETTERS[rng.randrange(n)]
        texts = [f"t{j} of q{i}" for j in range(n)]
        if i % 17 == 0:
            texts[-1] = "All of the above"
        pool.append(_q(i, n, answer, texts))
    return pool


@pytest.mark.parametrize("options, expected", [
    ({"A": "x", "B": "y", "C": "Both A and B"}, True),          # names option letters
    ({"A": "x", "B": "y", "C": "A and C", "D": "z"}, True),      # letter list
    ({"A": "x", "B": "y", "C": "All of the above"}, True),      # position: above
    ({"A": "x", "B": "y", "C": "None of these"}, True),
    ({"A": "x", "B": "y", "C": "All"}, True),                   # MedMCQA's short "All"
    ({"A": "x", "B": "y", "C": "Only A"}, True),
    ({"A": "x", "B": "y", "C": "1, 2 and 3"}, False),           # numbered statements of the stem
    ({"A": "Vitamin A deficiency", "B": "Scurvy"}, False),      # a letter in a name, alone
    ({"A": "yes", "B": "no", "C": "maybe"}, False),            # PubMedQA may be shuffled
    ({"A": "Aspirin or heparin", "B": "Warfarin"}, False),
])
def test_refers_to_other_options(options, expected):
    assert refers_to_other_options(Question("1", "?", options, "A", "toy")) is expected


def test_permutation_keeps_every_text_with_its_letter():
    q = _q(0, 5, "C")
    for order in ([4, 3, 2, 1, 0], [1, 2, 3, 4, 0], [0, 1, 2, 3, 4]):
        p = permute_options(q, order)
        assert sorted(p.options.values()) == sorted(q.options.values())
        assert p.options[p.answer] == q.options[q.answer]
        assert list(p.options) == list(LETTERS[:5]) and p.id == q.id
    with pytest.raises(ValueError, match="not a permutation"):
        permute_options(q, [0, 0, 1, 2, 3])


def test_cyclic_shift_moves_gold_through_every_position():
    q = _q(0, 4, "B")
    shifted = [cyclic_shift(q, s) for s in range(4)]
    assert sorted(s.answer for s in shifted) == list("ABCD")
    assert all(s.options[s.answer] == q.options["B"] for s in shifted)
    assert cyclic_shift(q, 0).options == q.options


@pytest.mark.parametrize("options, k, expected", [
    ({"A": "x", "B": "y", "C": "z", "D": "w"}, 1, [0]),
    ({"A": "x", "B": "y", "C": "z", "D": "w"}, 4, [0, 1, 2, 3]),
    ({"A": "yes", "B": "no", "C": "maybe"}, 4, [0, 1, 2]),       # capped at the option count
    ({"A": "x", "B": "y", "C": "Both A and B"}, 3, [0]),         # letter-referring: asked once
])
def test_eval_shifts(options, k, expected):
    assert eval_shifts(Question("1", "?", options, "A", "toy"), k) == expected


def test_draws_keep_gold_text_and_balance_letters_per_option_count():
    pool = _skewed_pool()
    draws = training_draws(pool, len(pool), seed=3)
    by_id = {q.id: q for q in pool}
    for d in draws:
        original = by_id[d.id]
        assert d.options[d.answer] == original.options[original.answer]  # gold follows its text
        assert sorted(d.options.values()) == sorted(original.options.values())
    before, after = gold_letter_shares(pool), gold_letter_shares(draws)
    assert before[4]["A"] > 0.6  # the pool really was skewed
    for n, shares in after.items():
        for letter, share in shares.items():
            assert abs(share - 1 / n) <= 0.03, (n, letter, share)


def test_letter_referring_questions_are_never_reordered():
    pool = _skewed_pool()
    fixed = [q for q in pool if refers_to_other_options(q)]
    assert fixed
    for d in training_draws(pool, 3 * len(pool), seed=1):
        if d.id in {q.id for q in fixed}:
            original = next(q for q in fixed if q.id == d.id)
            assert d.options == original.options and d.answer == original.answer


def test_draws_are_a_function_of_pool_and_seed():
    pool = _skewed_pool(60)
    a = training_draws(pool, 150, seed=7)
    assert a == training_draws(pool, 150, seed=7)  # what a resumed run rebuilds
    assert a != training_draws(pool, 150, seed=8)
    assert [d.meta["draw_pass"] for d in a] == [0] * 60 + [1] * 60 + [2] * 30
    # each pass permutes anew: the same question is not always asked in the same order
    first = {d.id: d.options for d in a[:60]}
    assert any(first[d.id] != d.options for d in a[60:120])
    # a longer run starts with the same draws (a raised max_steps resumes the same sequence)
    assert training_draws(pool, 200, seed=7)[:150] == a


def test_no_shuffle_keeps_the_pool_as_written():
    pool = _skewed_pool(30)
    draws = training_draws(pool, 30, seed=0, shuffle_options=False)
    assert [(d.id, d.options, d.answer) for d in draws] == [(q.id, q.options, q.answer) for q in pool]


def test_shuffle_report_counts_and_shares():
    pool = _skewed_pool(90)
    report = shuffle_report(pool, seed=0)
    assert report["n_fixed_order"] == sum(refers_to_other_options(q) for q in pool)
    assert report["gold_shares_before"][3]["A"] > report["gold_shares_after"][3]["A"]
    assert set(report["gold_shares_after"]) == {3, 4, 5}


def test_keep_options_keeps_gold_text_and_printed_order():
    q = _q(0, 5, "D")
    for k, seed in [(2, 0), (3, 1), (4, 2)]:
        c = keep_options(q, k, random.Random(seed))
        assert len(c.options) == k and list(c.options) == list(LETTERS[:k])
        assert c.options[c.answer] == q.options["D"]  # gold follows its text
        texts = list(q.options.values())
        assert [texts.index(t) for t in c.options.values()] == sorted(texts.index(t) for t in c.options.values())
    assert keep_options(q, 5, random.Random(0)) == q  # nothing to drop
    fixed = _q(1, 4, "A", ["x", "y", "z", "All of the above"])
    assert keep_options(fixed, 2, random.Random(0)) == fixed  # dropping would change "all of the above"
    with pytest.raises(ValueError):
        keep_options(q, 1, random.Random(0))


def test_draws_with_option_counts_mix_counts_and_stay_balanced():
    pool = [q for q in _skewed_pool(300) if len(q.options) == 5]  # one count, as AfriMed-QA
    draws = training_draws(pool, 3 * len(pool), seed=5, option_counts=[3, 4, 5])
    by_id = {q.id: q for q in pool}
    counts = {n: sum(len(d.options) == n for d in draws) for n in (3, 4, 5)}
    assert min(counts.values()) > 0.25 * len(draws), counts  # each count about a third (fixed ones keep 5)
    for d in draws:
        original = by_id[d.id]
        assert d.options[d.answer] == original.options[original.answer]
        assert set(d.options.values()) <= set(original.options.values())
        if refers_to_other_options(original):
            assert d.options == original.options
    for n, shares in gold_letter_shares(draws).items():
        for letter, share in shares.items():
            assert abs(share - 1 / n) <= 0.03, (n, letter, share)
    assert draws == training_draws(pool, 3 * len(pool), seed=5, option_counts=[3, 4, 5])  # resume rebuilds them
