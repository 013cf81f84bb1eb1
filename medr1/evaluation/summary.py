"""summary.json's numbers: per scorer and benchmark accuracy, 95 % bootstrap CI, unparsed, rule counts and
letter-bias measures, plus generation statistics, all recomputed from the whole predictions file.

Recomputed rather than accumulated, so a resumed evaluation and an uninterrupted one write the same summary.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from medr1.evaluation.scoring import score
from medr1.evaluation.stats import accuracy_ci
from medr1.task.letter_bias import bias_summary


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def score_predictions(rows: Sequence[dict], scorers: Sequence[str] = ("strict", "huatuo"), *,
                      seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per scorer and benchmark: n, accuracy, 95 % bootstrap CI, unparsed, rule counts (and more).

    With k samples per question the scorers' accuracy is the majority vote; `sample_accuracy` is the mean
    accuracy of single samples (what one sample would score on average).

    Each entry also carries the letter-bias measures of `medr1.task.letter_bias.bias_summary`
    (`consistent_accuracy`, `answer_top_share`, `answer_entropy`, `letter_recall_std`, `letter_recall`,
    `n_questions`, `permutations`). `accuracy` is over all rows, i.e. over every (question, rotation);
    `consistent_accuracy` is over questions, right only when right under every rotation it was asked
    with. A row a scorer leaves out of its denominator (huatuo's empty outputs) counts as not right there.

    Args:
        rows: prediction rows (see module docstring).
        scorers: names in `medr1.evaluation.scoring.SCORERS`.
        seed: bootstrap seed.

    Returns:
        {scorer: {benchmark: {...}}}.
    """

    rows = list(rows)
    out: dict[str, dict[str, dict]] = {}
    for scorer in scorers:
        result = score(rows, scorer)
        verdicts_by_bench: dict[str, list] = {}
        rows_by_bench: dict[str, list] = {}
        for row, v in zip(rows, result.rows, strict=True):
            verdicts_by_bench.setdefault(v.benchmark, []).append(v)
            rows_by_bench.setdefault(v.benchmark, []).append(row)
        per_bench = {}
        for bench, b in result.benchmarks.items():
            counted = [v for v in verdicts_by_bench.get(bench, []) if v.counted]
            ci = accuracy_ci([v.correct for v in counted], seed=seed)
            entry = {
                "scorer": scorer, "benchmark": bench, "n": b.n, "n_correct": b.n_correct,
                "accuracy": _finite(b.accuracy), "ci_low": _finite(ci.low), "ci_high": _finite(ci.high),
                "ci_method": f"{ci.method} 95%", "unparsed": b.unparsed, "by_rule": dict(b.by_rule),
                "n_dropped": b.n_dropped,
            }
            if b.selected is not None:
                entry.update(accuracy_first=_finite(b.accuracy_first), accuracy_last=_finite(b.accuracy_last),
                             selected=b.selected)
            if any(v.sample_letters for v in counted):
                entry["majority_vote"] = True
                hits = [letter == v.gold for v in counted for letter in v.sample_letters]
                entry["sample_accuracy"] = sum(hits) / len(hits) if hits else None
            vs = verdicts_by_bench.get(bench, [])
            entry.update(bias_summary([str(r["id"]) for r in rows_by_bench.get(bench, [])], [v.gold for v in vs],
                                      [v.letter if v.counted else None for v in vs],
                                      [v.correct and v.counted for v in vs]))
            per_bench[bench] = entry
        out[scorer] = per_bench
    return out


def generation_stats(rows: Sequence[dict]) -> dict[str, dict]:
    stats: dict[str, dict] = {}
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        sub = [r for r in rows if r["benchmark"] == bench]
        reasons = Counter(r.get("finish_reason") for r in sub)
        stats[bench] = {
            "n": len(sub),
            "finish_reasons": dict(reasons),
            "prompt_too_long": reasons.get("prompt_too_long", 0),
            "mean_completion_tokens": sum(sum(_as_list(r.get("completion_tokens"))) / max(1, len(
                _as_list(r.get("completion_tokens")))) for r in sub) / len(sub),
            "mean_prompt_tokens": sum(r.get("prompt_tokens", 0) for r in sub) / len(sub),
        }
    return stats


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x or 0]


def modality_scores(rows: Sequence[dict], scorers: Sequence[str] = ("strict",), *, seed: int = 0) -> dict:
    """Accuracy per modality with a 95 % bootstrap CI: {scorer: {benchmark: {modality: {...}}}}.

    Rows without a `modality` are left out; an empty dict when no row has one. A row a scorer leaves out
    of its denominator (huatuo's empty outputs) is left out here too, as in the benchmark totals.
    """

    rows = list(rows)
    if not any(r.get("modality") for r in rows):
        return {}
    out: dict[str, dict] = {}
    for scorer in scorers:
        verdicts: dict[str, dict[str, list[bool]]] = {}
        for row, v in zip(rows, score(rows, scorer).rows, strict=True):
            if row.get("modality") and v.counted:
                verdicts.setdefault(v.benchmark, {}).setdefault(row["modality"], []).append(bool(v.correct))
        per_bench = {}
        for bench, by_mod in verdicts.items():
            per_bench[bench] = {}
            for modality, hits in sorted(by_mod.items()):
                ci = accuracy_ci(hits, seed=seed)
                per_bench[bench][modality] = {"n": len(hits), "n_correct": sum(hits), "accuracy": sum(hits) / len(hits),
                                              "ci_low": ci.low, "ci_high": ci.high}
        out[scorer] = per_bench
    return out


__all__ = ["generation_stats", "score_predictions"]
