"""Letter-bias measures: is a model answering the question, or answering a letter?

Accuracy alone cannot tell. A model that always says "A" scores the share of gold "A"s (35 % on the
demo's MedMCQA sample, above the base model), and a policy that drifts towards one letter during GRPO
looks, on the reward curve, like one that is learning. Following Zheng et al. (ICLR 2024, "Large
Language Models Are Not Robust Multiple Choice Selectors"), the measures here look at answers by letter:

- `answer_top_share`: the share of all answers (unparsed ones included in the denominator) that are the
  most frequent letter. 1/k for a balanced k-option answerer, 1.0 for a collapsed one.
- `answer_entropy`: entropy in bits of the distribution of parsed letters (log2 k at most; 0 = collapse).
- `letter_recall_std`: the standard deviation, over gold letters, of the recall of each letter (how
  often a question whose gold is L is answered L). A model with a letter prior has high recall for its
  favourite letter and low for the rest; Zheng et al. call this the recall spread.
- `consistent_accuracy`: with each question asked under K rotations of its options
  (`medr1.data.option_order.cyclic_shift`), the share of questions answered right under every rotation. A
  letter-answerer gets 0; a content-answerer keeps its accuracy.

Training uses the first two as a collapse monitor (`CollapseMonitor`, columns of metrics.csv);
evaluation reports all four per benchmark and scorer. No torch here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# A logged step whose most frequent answer covers more than this share of its completions, for
# COLLAPSE_PATIENCE logged steps in a row, is reported as a collapse (warning in the log, band in plots).
COLLAPSE_THRESHOLD = 0.8
COLLAPSE_PATIENCE = 5


def answer_top_share(letters: Sequence[str | None]) -> float | None:
    """Share of `letters` equal to the most frequent parsed letter; None (unparsed) rows count in the
    denominator but never as the top letter. None for an empty sequence.

    >>> answer_top_share(["A", "A", "B", None])
    0.5
    """
    if not letters:
        return None
    counts = Counter(x for x in letters if x is not None)
    return (counts.most_common(1)[0][1] if counts else 0) / len(letters)


def answer_entropy(letters: Sequence[str | None]) -> float | None:
    """Entropy (bits) of the parsed letters' distribution; None when nothing parsed.

    >>> answer_entropy(["A", "B", "C", "D"]), answer_entropy(["A", "A", None])
    (2.0, 0.0)
    """
    counts = Counter(x for x in letters if x is not None)
    total = sum(counts.values())
    if not total:
        return None
    return max(0.0, -sum(c / total * math.log2(c / total) for c in counts.values()))


def letter_recall(golds: Sequence[str], letters: Sequence[str | None]) -> dict[str, float]:
    """{gold letter: share of the rows with that gold answered with that letter}, letters in order.

    >>> letter_recall(["A", "B", "B"], ["A", "A", "B"])
    {'A': 1.0, 'B': 0.5}
    """
    hits, totals = Counter(), Counter()
    for gold, letter in zip(golds, letters, strict=True):
        totals[gold] += 1
        hits[gold] += letter == gold
    return {g: hits[g] / totals[g] for g in sorted(totals)}


def letter_recall_std(golds: Sequence[str], letters: Sequence[str | None]) -> float | None:
    """Population standard deviation of `letter_recall` over the gold letters present (None if none).

    >>> letter_recall_std(["A", "B", "C", "D"], ["A", "A", "A", "A"])  # recall 1, 0, 0, 0
    0.4330127018922193
    """
    recalls = list(letter_recall(golds, letters).values())
    if not recalls:
        return None
    mean = sum(recalls) / len(recalls)
    return math.sqrt(sum((r - mean) ** 2 for r in recalls) / len(recalls))


def consistent_correct(rows: Iterable[tuple[Any, bool]]) -> dict[Any, bool]:
    """{question key: right under every row of it} from (key, correct) pairs (one pair per rotation).

    >>> consistent_correct([("q1", True), ("q1", False), ("q2", True)])
    {'q1': False, 'q2': True}
    """
    out: dict[Any, bool] = {}
    for key, correct in rows:
        out[key] = out.get(key, True) and bool(correct)
    return out


def bias_summary(questions: Sequence[Any], golds: Sequence[str], letters: Sequence[str | None],
                 correct: Sequence[bool]) -> dict[str, Any]:
    """The letter-bias block of one benchmark under one scorer.

    Args:
        questions: per row, the key of its question (rows of one question are its rotations).
        golds, letters, correct: per row, the gold letter, the scored letter (None = unparsed), the verdict.

    Returns:
        {"n_questions", "permutations" (most rows of one question), "consistent_accuracy",
         "answer_top_share", "answer_entropy", "letter_recall_std", "letter_recall"}.
    """
    per_question = consistent_correct(zip(questions, correct, strict=True))
    rotations = Counter(questions)
    return {
        "n_questions": len(per_question),
        "permutations": max(rotations.values(), default=0),
        "consistent_accuracy": sum(per_question.values()) / len(per_question) if per_question else None,
        "answer_top_share": answer_top_share(list(letters)),
        "answer_entropy": answer_entropy(list(letters)),
        "letter_recall_std": letter_recall_std(list(golds), list(letters)),
        "letter_recall": letter_recall(list(golds), list(letters)),
    }


def collapse_spans(top_shares: Sequence[float | None], threshold: float = COLLAPSE_THRESHOLD,
                   patience: int = COLLAPSE_PATIENCE) -> list[tuple[int, int]]:
    """Index ranges [start, end] (inclusive) where `top_shares` stays above `threshold` for at least
    `patience` consecutive entries; missing values break a run.

    >>> collapse_spans([0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.4], patience=5)
    [(1, 5)]
    """
    spans, start = [], None
    for i, share in enumerate([*top_shares, None]):
        above = share is not None and not (isinstance(share, float) and math.isnan(share)) and share > threshold
        if above and start is None:
            start = i
        elif not above and start is not None:
            if i - start >= patience:
                spans.append((start, i - 1))
            start = None
    return spans


@dataclass
class CollapseMonitor:
    """Watches `answer_top_share` step by step and says once per episode when it stayed above the
    threshold for `patience` logged steps (the training callback logs a warning then).

    >>> m = CollapseMonitor(patience=2)
    >>> [m.update(s, x) for s, x in enumerate([0.9, 0.95, 0.99, 0.3, 0.9])]
    [False, True, False, False, False]
    """

    threshold: float = COLLAPSE_THRESHOLD
    patience: int = COLLAPSE_PATIENCE
    run_length: int = 0
    episodes: list[int] = field(default_factory=list)  # the step at which each warning fired

    def update(self, step: int, top_share: float | None) -> bool:
        """Feed one logged step; True exactly when this step completes a run of `patience` steps."""
        if top_share is None or top_share <= self.threshold:
            self.run_length = 0
            return False
        self.run_length += 1
        if self.run_length == self.patience:
            self.episodes.append(step)
            return True
        return False


def step_answer_stats(letters: Sequence[str | None]) -> dict[str, float | None]:
    """The two metrics.csv columns of the collapse monitor for one step's extracted answers."""
    return {"answer_top_share": answer_top_share(letters), "answer_entropy": answer_entropy(letters)}


__all__ = ["COLLAPSE_PATIENCE", "COLLAPSE_THRESHOLD", "CollapseMonitor", "answer_entropy", "answer_top_share",
           "bias_summary", "collapse_spans", "consistent_correct", "letter_recall", "letter_recall_std",
           "step_answer_stats"]
