"""Uncertainty for benchmark accuracies: bootstrap and Wilson intervals, exact McNemar, paired differences.

Medical QA benchmarks are small (PubMedQA-L has 500 questions, MedQA 1,273), so a two-point gain can be
noise. Every accuracy we report carries an interval, and every comparison between two runs on the same
questions is paired: McNemar for "is there a difference", a paired bootstrap for "how large".

Why it is built this way:
- Outcomes are 0/1, so resampling n questions with replacement is *exactly* a binomial draw of the
  number correct (one run) or a multinomial draw over the four (a, b) outcome cells (two paired runs).
  We draw the counts instead of index arrays: the same bootstrap distribution, vectorised in numpy,
  with O(n_boot) memory instead of O(n_boot * n).
- The percentile bootstrap degenerates at 0 % and 100 % accuracy (the interval collapses to a point);
  `wilson_ci` is the closed-form cross-check that stays sensible there.
- The McNemar test is the exact binomial on the discordant pairs (scipy's `binomtest`), not the
  chi-square approximation, which is poor for the handful of discordant questions small benchmarks give.
- Everything is deterministic given `seed` (numpy `default_rng`); nothing reads the clock.
- Empty inputs give NaN intervals rather than exceptions, so a report over many subjects does not die
  on one empty category; malformed inputs (not 0/1, unequal lengths) raise `ValueError`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps


@dataclass(frozen=True)
class CI:
    """A point estimate with a two-sided interval.

    Attributes:
        estimate: the observed statistic (accuracy, or a difference of accuracies).
        low, high: interval bounds; NaN when n == 0.
        n: number of questions the estimate rests on.
        method: how the interval was computed ("bootstrap", "wilson", "paired-bootstrap").
    """

    estimate: float
    low: float
    high: float
    n: int
    method: str


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of two runs scored on the same questions.

    Attributes:
        b01: questions run A got wrong and run B got right.
        b10: questions run A got right and run B got wrong.
        p_value: two-sided exact binomial p-value of b01 vs b10 under p = 0.5; 1.0 with no discordant pairs.
        n: number of paired questions.
    """

    b01: int
    b10: int
    p_value: float
    n: int


def _as_outcomes(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    """1-D bool array from bools or 0/1 numbers; anything else is a bug upstream, so it raises."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(bool)
    if arr.dtype == bool:
        return arr
    # np.asarray(..., dtype=bool) would turn 2, 0.5, NaN or "no" into True silently.
    bad = [v for v in arr.tolist() if isinstance(v, str) or v not in (0, 1)]
    if bad:
        raise ValueError(f"{name} must hold booleans or 0/1, got e.g. {bad[:3]!r}")
    return arr.astype(bool)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0


def _percentiles(samples: np.ndarray, tail: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def accuracy_ci(
    correct: Sequence[bool] | np.ndarray, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> CI:
    """Accuracy with a percentile-bootstrap interval.

    Args:
        correct: one verdict per question (bools or 0/1).
        n_boot: bootstrap replicates.
        seed: seed of the numpy generator; the same seed gives the same interval.
        level: coverage of the two-sided interval.

    Returns:
        `CI` with method "bootstrap"; estimate, low and high are NaN when `correct` is empty.

    >>> ci = accuracy_ci([True, True, False, True])
    >>> ci.estimate, ci.n, ci.low <= ci.estimate <= ci.high
    (0.75, 4, True)
    """
    x = _as_outcomes(correct, "correct")
    tail = _check_level(level)
    n = int(x.size)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0, "bootstrap")
    k = int(x.sum())
    p = k / n
    rng = np.random.default_rng(seed)
    # Number correct in a resample of n questions with replacement ~ Binomial(n, k/n); see module docstring.
    boot = rng.binomial(n, p, size=n_boot) / n
    low, high = _percentiles(boot, tail)
    return CI(p, low, high, n, "bootstrap")



def wilson_ci(k: int, n: int, *, level: float = 0.95) -> CI:
    """Wilson score interval for k successes out of n: the closed-form cross-check of `accuracy_ci`.

    Args:
        k: number correct (0 <= k <= n).
        n: number of questions.
        level: coverage of the two-sided interval.

    Returns:
        `CI` with method "wilson"; NaNs when n == 0.

    >>> ci = wilson_ci(5, 10)
    >>> round(ci.low, 4), round(ci.high, 4)
    (0.2366, 0.7634)
    """
    tail = _check_level(level)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0, "wilson")
    z = float(sps.norm.ppf(1.0 - tail))
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clip float error at the edges (k == 0 or k == n give exactly 0 or 1 in exact arithmetic).
    return CI(p, max(0.0, center - half), min(1.0, center + half), n, "wilson")


def _paired(a_correct, b_correct) -> tuple[np.ndarray, np.ndarray]:
    a = _as_outcomes(a_correct, "a_correct")
    b = _as_outcomes(b_correct, "b_correct")
    if a.size != b.size:
        raise ValueError(
            f"paired runs must score the same questions: got {a.size} and {b.size} verdicts "
            "(align them by question id first)"
        )
    return a, b


def mcnemar_exact(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> McNemarResult:
    """Exact two-sided McNemar test: do runs A and B differ on the same questions?

    Only discordant questions carry information; under the null each is equally likely to favour A or
    B, so b01 ~ Binomial(b01 + b10, 0.5).

    Args:
        a_correct: verdicts of run A, one per question.
        b_correct: verdicts of run B on the same questions, in the same order.

    Returns:
        `McNemarResult`; p_value is 1.0 when there are no discordant pairs.

    Raises:
        ValueError: if the two sequences differ in length.

    >>> r = mcnemar_exact([1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0])
    >>> r.b01, r.b10, r.p_value
    (1, 6, 0.125)
    """
    a, b = _paired(a_correct, b_correct)
    b01 = int((~a & b).sum())
    b10 = int((a & ~b).sum())
    discordant = b01 + b10
    p = 1.0 if discordant == 0 else float(sps.binomtest(b01, discordant, 0.5).pvalue)
    return McNemarResult(b01, b10, min(p, 1.0), int(a.size))


def paired_bootstrap_diff(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> CI:
    """Accuracy(B) - accuracy(A) with a paired bootstrap interval (questions resampled jointly).

    Args:
        a_correct: verdicts of run A (the baseline), one per question.
        b_correct: verdicts of run B on the same questions, in the same order.
        n_boot: bootstrap replicates.
        seed: seed of the numpy generator.
        level: coverage of the two-sided interval.

    Returns:
        `CI` with method "paired-bootstrap"; positive estimate means B is better. NaNs for empty input.

    Raises:
        ValueError: if the two sequences differ in length.

    >>> ci = paired_bootstrap_diff([0, 0, 1, 1], [1, 1, 1, 1])
    >>> ci.estimate
    0.5
    """
    a, b = _paired(a_correct, b_correct)
    tail = _check_level(level)
    n = int(a.size)
    if n == 0:
        return CI(math.nan, math.nan, math.nan, 0, "paired-bootstrap")
    # Cells: A wrong & B right (+1), A right & B wrong (-1), concordant (0). Resampling question
    # indices jointly is a multinomial draw over these cells (module docstring).
    n_up = int((~a & b).sum())
    n_down = int((a & ~b).sum())
    probs = np.array([n_up, n_down, n - n_up - n_down], dtype=float) / n
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, probs, size=n_boot)
    boot = (cells[:, 0] - cells[:, 1]) / n
    low, high = _percentiles(boot, tail)
    return CI((n_up - n_down) / n, low, high, n, "paired-bootstrap")


def breakdown(
    df: pd.DataFrame,
    by: str,
    correct_col: str = "correct",
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Accuracy per group (subject, category, benchmark) with a bootstrap interval and n.

    Rows whose group is missing form their own group (NaN) instead of disappearing from the table.

    Args:
        df: one row per question, with a group column and a 0/1 verdict column.
        by: the group column.
        correct_col: the verdict column.
        n_boot, seed, level: passed to `accuracy_ci` (same seed for every group).

    Returns:
        DataFrame with columns [by, "n", "n_correct", "accuracy", "ci_low", "ci_high"], sorted by group.

    >>> df = pd.DataFrame({"subject": ["a", "a", "b"], "correct": [True, False, True]})
    >>> breakdown(df, "subject")[["subject", "n", "accuracy"]].values.tolist()
    [['a', 2, 0.5], ['b', 1, 1.0]]
    """
    for col in (by, correct_col):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in DataFrame (columns: {list(df.columns)})")
    rows = []
    for group, sub in df.groupby(by, dropna=False, sort=True):
        x = _as_outcomes(sub[correct_col].to_numpy(), correct_col)
        ci = accuracy_ci(x, n_boot=n_boot, seed=seed, level=level)
        rows.append(
            {
                by: group,
                "n": ci.n,
                "n_correct": int(x.sum()),
                "accuracy": ci.estimate,
                "ci_low": ci.low,
                "ci_high": ci.high,
            }
        )
    return pd.DataFrame(rows, columns=[by, "n", "n_correct", "accuracy", "ci_low", "ci_high"])


def majority_vote(letters: Sequence[str | None]) -> str | None:
    """Most frequent letter among k sampled answers; unparsed samples (None) do not vote.

    Ties go to the tied letter that appears first in `letters`, so the result depends only on the
    samples and their order (sample order is the generation order, which is seeded), never on hash
    order.

    Args:
        letters: one extracted letter (or None) per sample.

    Returns:
        The winning letter, or None when no sample was parsed.

    >>> majority_vote(["B", None, "A", "B", "A"])
    'B'
    >>> majority_vote([None, None]) is None
    True
    """
    votes = [x for x in letters if x is not None]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    # Counter preserves first-insertion order, so the first tied letter met in the list wins.
    return next(x for x, c in counts.items() if c == best)
