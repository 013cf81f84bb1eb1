"""Tests for medr1.evaluation.stats: intervals, exact McNemar and paired differences against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medr1.evaluation.stats import (
    CI,
    accuracy_ci,
    breakdown,
    majority_vote,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_ci,
)

Z95 = 1.959963984540054  # norm.ppf(0.975)


def _paired_from_counts(b01: int, b10: int, both_right: int = 0, both_wrong: int = 0):
    """Verdict lists for runs A and B with the given cells of the 2x2 table."""
    a = [0] * b01 + [1] * b10 + [1] * both_right + [0] * both_wrong
    b = [1] * b01 + [0] * b10 + [1] * both_right + [0] * both_wrong
    return a, b


# --- McNemar ---------------------------------------------------------------------------------------

MCNEMAR_CASES = [
    # (b01, b10, concordant right, concordant wrong, p by hand)
    (1, 6, 5, 3, 2 * (1 + 7) / 2**7),  # P(X<=1 | n=7) = 8/128, doubled = 0.125
    (6, 1, 0, 0, 0.125),  # symmetric: direction does not change a two-sided p
    (0, 5, 0, 0, 2 * 1 / 2**5),  # all discordant favour A: 2/32 = 0.0625
    (2, 8, 10, 10, 2 * (1 + 10 + 45) / 2**10),  # P(X<=2 | n=10) = 56/1024, doubled = 0.109375
    (3, 3, 4, 0, 1.0),  # balanced discordance: no evidence either way
    (0, 0, 7, 2, 1.0),  # no discordant pairs: defined as p = 1
    (0, 1, 0, 0, 1.0),  # a single discordant pair: 2 * 0.5 capped at 1
]


@pytest.mark.parametrize("b01, b10, right, wrong, expected", MCNEMAR_CASES)
def test_mcnemar_exact_matches_hand_computed_binomial(b01, b10, right, wrong, expected):
    a, b = _paired_from_counts(b01, b10, right, wrong)
    result = mcnemar_exact(a, b)
    assert (result.b01, result.b10, result.n) == (b01, b10, b01 + b10 + right + wrong)
    assert result.p_value == pytest.approx(expected, abs=1e-12)


def test_mcnemar_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="same questions"):
        mcnemar_exact([1, 0, 1], [1, 0])


# --- Wilson ----------------------------------------------------------------------------------------

WILSON_CASES = [
    # (k, n, low, high)
    (5, 10, 0.2366, 0.7634),  # textbook value for 5/10 at 95 %
    (0, 10, 0.0, Z95**2 / (10 + Z95**2)),  # k = 0: upper bound reduces to z^2 / (n + z^2) = 0.2775
    (10, 10, 10 / (10 + Z95**2), 1.0),  # k = n: lower bound reduces to n / (n + z^2) = 0.7225
]


@pytest.mark.parametrize("k, n, low, high", WILSON_CASES)
def test_wilson_known_values(k, n, low, high):
    ci = wilson_ci(k, n)
    assert ci.estimate == k / n
    assert (ci.low, ci.high) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_wilson_empty_and_invalid():
    ci = wilson_ci(0, 0)
    assert ci.n == 0 and math.isnan(ci.estimate) and math.isnan(ci.low) and math.isnan(ci.high)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


# --- bootstrap accuracy ----------------------------------------------------------------------------


def _outcomes(n: int, p: float) -> list[bool]:
    """Exactly round(n * p) correct answers, spread evenly (no randomness in the data itself)."""
    k = round(n * p)
    return [i < k for i in range(n)]


def test_accuracy_ci_contains_estimate_and_narrows_with_n():
    small = accuracy_ci(_outcomes(100, 0.7))
    large = accuracy_ci(_outcomes(2000, 0.7))
    for ci in (small, large):
        assert ci.estimate == pytest.approx(0.7)
        assert ci.low < ci.estimate < ci.high
        assert ci.method == "bootstrap"
    assert (large.high - large.low) < (small.high - small.low) / 3  # width ~ 1/sqrt(n): sqrt(20) ~ 4.5


def test_accuracy_ci_agrees_with_wilson_away_from_the_edges():
    boot = accuracy_ci(_outcomes(1000, 0.62))
    wil = wilson_ci(620, 1000)
    assert boot.low == pytest.approx(wil.low, abs=0.005)
    assert boot.high == pytest.approx(wil.high, abs=0.005)


def test_accuracy_ci_is_deterministic_given_seed():
    data = _outcomes(300, 0.55)
    assert accuracy_ci(data, seed=3) == accuracy_ci(data, seed=3)
    # Percentiles of k/n are discrete, so with many replicates two seeds often land on the same
    # bounds; a few replicates make the seed visible.
    assert accuracy_ci(data, seed=3, n_boot=20) != accuracy_ci(data, seed=4, n_boot=20)


def test_accuracy_ci_shortcut_matches_explicit_index_resampling():
    # The implementation draws Binomial counts instead of index arrays; check it against the textbook
    # procedure on the same data (different random streams, so compare within Monte-Carlo error).
    x = np.array(_outcomes(200, 0.35))
    rng = np.random.default_rng(123)
    explicit = x[rng.integers(0, x.size, size=(20_000, x.size))].mean(axis=1)
    lo, hi = np.quantile(explicit, [0.025, 0.975])
    ci = accuracy_ci(x, n_boot=20_000)
    assert (ci.low, ci.high) == (pytest.approx(lo, abs=0.011), pytest.approx(hi, abs=0.011))


EDGE_CASES = [
    # (verdicts, estimate, low, high)
    ([True] * 40, 1.0, 1.0, 1.0),  # all correct: the percentile interval collapses (see wilson_ci)
    ([0] * 40, 0.0, 0.0, 0.0),  # all wrong, given as 0/1 ints
]


@pytest.mark.parametrize("verdicts, estimate, low, high", EDGE_CASES)
def test_accuracy_ci_edges(verdicts, estimate, low, high):
    assert accuracy_ci(verdicts) == CI(estimate, low, high, len(verdicts), "bootstrap")


def test_accuracy_ci_empty_gives_nans():
    ci = accuracy_ci([])
    assert ci.n == 0 and all(math.isnan(v) for v in (ci.estimate, ci.low, ci.high))


BAD_VERDICTS = [
    [1, 2, 0],  # a count, not a verdict
    [True, None],  # a missing verdict must not silently count as wrong or right
    [0.5, 1.0],  # a probability
    ["yes", "no"],  # strings would all be truthy
]


@pytest.mark.parametrize("bad", BAD_VERDICTS)
def test_accuracy_ci_rejects_non_binary(bad):
    with pytest.raises(ValueError, match="booleans or 0/1"):
        accuracy_ci(bad)


# --- paired bootstrap ------------------------------------------------------------------------------


def test_paired_diff_sign_and_estimate():
    a, b = _paired_from_counts(b01=30, b10=5, both_right=50, both_wrong=15)  # B fixes 30, breaks 5
    ci = paired_bootstrap_diff(a, b)
    assert ci.estimate == pytest.approx((30 - 5) / 100)
    assert 0 < ci.low < ci.estimate < ci.high
    flipped = paired_bootstrap_diff(b, a)
    assert flipped.estimate == pytest.approx(-0.25)
    assert flipped.high < 0


def test_paired_diff_identical_runs_is_exactly_zero():
    a = _outcomes(50, 0.4)
    assert paired_bootstrap_diff(a, a) == CI(0.0, 0.0, 0.0, 50, "paired-bootstrap")


def test_paired_diff_is_narrower_than_unpaired_when_runs_agree():
    # Two runs that agree on most questions: pairing removes the shared question difficulty.
    a, b = _paired_from_counts(b01=8, b10=2, both_right=120, both_wrong=70)
    paired = paired_bootstrap_diff(a, b)
    ca, cb = accuracy_ci(a), accuracy_ci(b, seed=1)
    unpaired_halfwidth = Z95 * math.sqrt(
        ca.estimate * (1 - ca.estimate) / ca.n + cb.estimate * (1 - cb.estimate) / cb.n
    )
    assert (paired.high - paired.low) / 2 < unpaired_halfwidth / 2


def test_paired_diff_shortcut_matches_explicit_joint_resampling():
    a, b = _paired_from_counts(b01=25, b10=10, both_right=100, both_wrong=65)
    a, b = np.array(a, bool), np.array(b, bool)
    idx = np.random.default_rng(7).integers(0, a.size, size=(20_000, a.size))
    explicit = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    lo, hi = np.quantile(explicit, [0.025, 0.975])
    ci = paired_bootstrap_diff(a, b, n_boot=20_000)
    assert (ci.low, ci.high) == (pytest.approx(lo, abs=0.01), pytest.approx(hi, abs=0.01))


def test_paired_diff_deterministic_empty_and_length_check():
    a, b = _paired_from_counts(4, 9, 10, 10)
    assert paired_bootstrap_diff(a, b, seed=5) == paired_bootstrap_diff(a, b, seed=5)
    empty = paired_bootstrap_diff([], [])
    assert empty.n == 0 and math.isnan(empty.estimate)
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap_diff([1, 0], [1])


# --- breakdown -------------------------------------------------------------------------------------


def test_breakdown_per_group_counts_and_missing_group_kept():
    df = pd.DataFrame(
        {
            "subject": ["anatomy", "anatomy", "anatomy", "virology", None],
            "correct": [True, False, True, False, True],
        }
    )
    table = breakdown(df, "subject")
    assert list(table.columns) == ["subject", "n", "n_correct", "accuracy", "ci_low", "ci_high"]
    rows = {(r.subject if isinstance(r.subject, str) else "<missing>"): r for r in table.itertuples()}
    assert (rows["anatomy"].n, rows["anatomy"].n_correct) == (3, 2)
    assert rows["anatomy"].accuracy == pytest.approx(2 / 3)
    assert (rows["virology"].n, rows["virology"].accuracy) == (1, 0.0)
    assert rows["<missing>"].n == 1  # a row without a subject is reported, not dropped
    assert table["n"].sum() == len(df)
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()


def test_breakdown_unknown_column():
    with pytest.raises(ValueError, match="not in DataFrame"):
        breakdown(pd.DataFrame({"correct": [True]}), "subject")


# --- majority vote ---------------------------------------------------------------------------------

VOTE_CASES = [
    (["A", "B", "B"], "B"),  # plain majority
    (["B", None, "A", "B", "A"], "B"),  # tie 2-2: B occurs first
    (["A", "B", "A", "B"], "A"),  # tie 2-2: A occurs first
    ([None, "C", None, None], "C"),  # unparsed samples do not vote, even when they are the majority
    ([None, None], None),  # nothing parsed
    ([], None),  # no samples
]


@pytest.mark.parametrize("letters, expected", VOTE_CASES)
def test_majority_vote(letters, expected):
    assert majority_vote(letters) == expected
