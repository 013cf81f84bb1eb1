"""Two scorers over the same predictions: our `strict` scorer and a reproduction of HuatuoGPT-o1's.

A prediction is one row of `eval/<label>/predictions.jsonl`: a dict with `id`, `benchmark`, `options`
(letter -> text), `gold` (a letter) and either `completion` (one string) or `completions` (k sampled
strings). Both scorers read the same rows, so a reader can see how much of a gap between our numbers
and a paper's is the model and how much is the scorer.

strict
    The letter comes from `medr1.task.answers.extract_choice_with_rule`, the same function the GRPO reward
    uses, so what training rewards is what evaluation counts. A completion it cannot parse is wrong;
    nothing is dropped and nothing is guessed. With k samples the row's letter is the majority vote of
    the parsed samples (`medr1.evaluation.stats.majority_vote`: unparsed samples do not vote, ties go to the
    letter sampled first).

huatuo
    Reimplements, rule for rule, `match_choice` and `score` in FreedomIntelligence/HuatuoGPT-o1
    `evaluation/scorer.py` (commit dc6e08a of 2025-01-04, read from the public repository; written
    here from that reading, not copied), plus the one step of their `evaluation/eval.py` that changes
    the denominator. Their scorer, not their whole protocol: a number is comparable with their tables
    only with their sets, prompt and sampling as well (`medr1.task.protocols`, `huatuo-o1`); it is
    optimistic for the reasons flagged below.
    While writing it, `huatuo_extract` and `score_huatuo` were run side by side with their functions on
    ~55,000 generated strings and agreed on every one (a one-off check; their code is not vendored).

    0. Clean-up (eval.py): "</s>" is deleted and one leading space removed. A completion that is then
       empty never reaches their scorer, so it leaves the denominator. Here such rows are kept in
       `rows` with `counted=False` and reported as `n_dropped`. [optimistic: an empty generation is not
       a wrong answer there]
    1. If the text contains "## Final Response\\n\\n" (HuatuoGPT-o1's own output format), only the part
       after its last occurrence is searched.
    2. `answer_is`: every "answer is" (lower case, exactly one space, then any whitespace or none)
       followed by a capital A-N. The letter range is fixed, not the question's options, so "the answer
       is Hypertension" yields "H" (wrong on a 4-option question) and "the answer is Aspirin" yields "A";
       "answer is: B" and "Answer is B" do not match here (they fall to rule 3).
    3. `letter`: every capital letter among the first len(options) of A-N that stands alone: preceded by
       a non-word character, a CJK character or the start of the text, followed by a non-word or CJK
       character or the end, and not an "A" followed by a space (so that the article in "A 45-year-old
       man" is skipped, along with "option A is"). The neighbouring characters are consumed, so in
       "A,B" only "A" is found. Any stand-alone capital counts: "vitamin E.", "type B", and "I think"
       on 10-option MMLU-Pro questions. Their code calls rules 2 and 3 "type 1".
    4. `option_text` ("type 2"): on the lower-cased text, the options whose lower-cased text occurs in
       it. "Last" is the option whose last occurrence starts latest. "First" is, by a quirk of their
       code, also a latest-position choice: the option whose *first* occurrence starts latest, not the
       option mentioned first. Ties (one option text a prefix of another) go to the earlier option.
    5. `fuzzy` ("type 3"): when nothing above matched, the option whose lower-cased text is most similar
       to the whole lower-cased text by `difflib.SequenceMatcher(None, option, text).ratio()` (difflib's
       default autojunk on texts of 200+ characters included). Ties go to the *last* option, so even a
       text sharing nothing with any option gets an answer. [optimistic: this scorer never says
       "unparsed"; a guess among k options is right 1/k of the time]
    6. Rules 2-4 each give a first-match and a last-match letter. Per benchmark, their score computes
       accuracy with every row's first letter and with every row's last letter and reports the larger
       (the last one on a tie). [optimistic: the choice is made after seeing the gold answers, per
       benchmark] `BenchmarkScore` keeps both accuracies and which was selected, and each row's
       `letter`/`correct` follow the selected side so per-row verdicts add up to the reported accuracy.

    On our tag-format completions the first match often falls inside <think> ("A? no..."), so step 6
    usually selects "last" there. Letters are compared with the gold case-insensitively, as theirs are. Their evaluation scores one
    sample per question; for k samples (our extension, not theirs) the first letters and the last
    letters are each majority-voted over the non-empty samples before step 6.

Rule names in `by_rule` are the strict extractor's own names for `strict`, and answer_is / letter /
option_text / fuzzy for `huatuo`.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import pandas as pd

from medr1.evaluation.stats import majority_vote
from medr1.task.answers import extract_choice_with_rule

# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How one prediction row was scored.

    Attributes:
        id, benchmark, gold: copied from the row.
        letter: the letter scored (None when unparsed); for k samples, the vote.
        rule: how the letter was extracted (for k samples: the rule of the first sample that gave it).
        correct: letter == gold.
        counted: False only for rows the huatuo scorer leaves out of the denominator (empty output).
        letter_first, letter_last: huatuo only, the first-match and last-match letters.
        sample_letters: the per-sample letters when the row has k > 1 samples.
    """

    id: str
    benchmark: str
    gold: str
    letter: str | None
    rule: str
    correct: bool
    counted: bool = True
    letter_first: str | None = None
    letter_last: str | None = None
    sample_letters: tuple[str | None, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchmarkScore:
    """Accuracy of one benchmark under one scorer.

    Attributes:
        n: rows in the denominator (all rows for strict; non-empty outputs for huatuo).
        n_correct, accuracy: accuracy = n_correct / n (NaN when n == 0).
        unparsed: counted rows without a letter (always 0 for huatuo, whose fuzzy rule always answers).
        by_rule: counted rows per extraction rule; sums to n.
        n_dropped: rows left out of n (huatuo's empty outputs).
        accuracy_first, accuracy_last, selected: huatuo only, the two candidate accuracies and which
            one ("first" or "last") was reported.
    """

    benchmark: str
    n: int
    n_correct: int
    accuracy: float
    unparsed: int
    by_rule: dict[str, int]
    n_dropped: int = 0
    accuracy_first: float | None = None
    accuracy_last: float | None = None
    selected: str | None = None


@dataclass
class ScoreResult:
    """Per-benchmark scores plus per-row verdicts (in input order) of one scorer.

    Evaluation writes `rows` next to the predictions; `medr1.evaluation.stats` pairs two runs by
    (benchmark, id) on `frame()`.
    """

    scorer: str
    benchmarks: dict[str, BenchmarkScore]
    rows: list[Verdict] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """One dict per benchmark, in first-seen order (for summary.json / results.csv)."""
        return [{"scorer": self.scorer, **asdict(b)} for b in self.benchmarks.values()]

    def frame(self) -> pd.DataFrame:
        """Per-row verdicts as a DataFrame (columns of `Verdict`)."""
        return pd.DataFrame([v.as_dict() for v in self.rows], columns=list(Verdict.__dataclass_fields__))


# --- row access ------------------------------------------------------------------------------------


def _samples(row: Mapping) -> list[str]:
    if "completions" in row:
        samples = row["completions"]
        if isinstance(samples, str) or not isinstance(samples, list) or not samples:
            raise ValueError(f"row {row.get('id')!r}: 'completions' must be a non-empty list of strings")
    elif "completion" in row:
        samples = [row["completion"]]
    else:
        raise ValueError(f"row {row.get('id')!r}: needs 'completion' or 'completions'")
    if not all(isinstance(s, str) for s in samples):
        raise ValueError(f"row {row.get('id')!r}: completions must be strings")
    return samples


def _check_rows(predictions: Iterable[Mapping]) -> list[Mapping]:
    rows = list(predictions)
    seen: set[tuple[str, str, int]] = set()
    for row in rows:
        missing = [k for k in ("id", "benchmark", "options", "gold") if k not in row]
        if missing:
            raise ValueError(f"prediction row {row.get('id')!r} lacks {missing}")
        if not isinstance(row["options"], Mapping) or not row["options"]:
            raise ValueError(f"row {row['id']!r}: 'options' must be a non-empty letter -> text dict")
        if row["gold"] not in row["options"]:
            raise ValueError(f"row {row['id']!r}: gold {row['gold']!r} is not one of {list(row['options'])}")
        # One row per question and option rotation (`shift`, 0 when absent).
        key = (str(row["benchmark"]), str(row["id"]), int(row.get("shift") or 0))
        if key in seen:
            # Two verdicts for one question would be double-counted and break pairing between runs.
            raise ValueError(f"duplicate prediction for id {key[1]!r} (shift {key[2]}) in benchmark {key[0]!r}")
        seen.add(key)
    return rows


def _rule_of(letter: str | None, letters: list[str | None], rules: list[str]) -> str:
    """Rule of the first sample that produced `letter` (the first sample's rule when none did)."""
    for sample_letter, rule in zip(letters, rules, strict=True):
        if sample_letter == letter:
            return rule
    return rules[0]


def _summarise(benchmark: str, verdicts: list[Verdict], **extra) -> BenchmarkScore:
    counted = [v for v in verdicts if v.counted]
    n = len(counted)
    n_correct = sum(v.correct for v in counted)
    return BenchmarkScore(
        benchmark=benchmark,
        n=n,
        n_correct=n_correct,
        accuracy=n_correct / n if n else math.nan,
        unparsed=sum(v.letter is None for v in counted),
        by_rule=dict(Counter(v.rule for v in counted)),
        n_dropped=len(verdicts) - n,
        **extra,
    )


def _group(verdicts: list[Verdict]) -> dict[str, list[Verdict]]:
    groups: dict[str, list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault(v.benchmark, []).append(v)
    return groups


# --- strict ----------------------------------------------------------------------------------------


def score_strict(predictions: Iterable[Mapping]) -> ScoreResult:
    """Score with the training extractor: unparsed is wrong, k samples are majority-voted.

    Args:
        predictions: prediction rows (see module docstring).

    Returns:
        `ScoreResult` with scorer "strict".

    >>> row = {"id": "q1", "benchmark": "medqa", "options": {"A": "Aspirin", "B": "Heparin"},
    ...        "gold": "B", "completion": "<think>...</think><answer>B</answer>"}
    >>> score_strict([row]).benchmarks["medqa"].accuracy
    1.0
    """
    verdicts = []
    for row in _check_rows(predictions):
        samples = _samples(row)
        extractions = [extract_choice_with_rule(text, row["options"]) for text in samples]
        letters = [e.letter for e in extractions]
        rules = [e.rule for e in extractions]
        letter = letters[0] if len(letters) == 1 else majority_vote(letters)
        verdicts.append(
            Verdict(
                id=str(row["id"]),
                benchmark=str(row["benchmark"]),
                gold=row["gold"],
                letter=letter,
                rule=_rule_of(letter, letters, rules),
                correct=letter is not None and letter == row["gold"],
                sample_letters=tuple(letters) if len(letters) > 1 else (),
            )
        )
    benchmarks = {b: _summarise(b, vs) for b, vs in _group(verdicts).items()}
    return ScoreResult("strict", benchmarks, verdicts)


# --- huatuo ----------------------------------------------------------------------------------------

_FINAL_RESPONSE = "## Final Response\n\n"
_ANSWER_IS = re.compile(r"answer is\s*([A-N])")
_LETTER_RANGE = "ABCDEFGHIJKLMN"
_CJK = "\u4e00-\u9fff"


@dataclass(frozen=True)
class HuatuoMatch:
    """What HuatuoGPT-o1's `match_choice` returns: first-match and last-match letters and the rule."""

    first: str
    last: str
    rule: str


def _clean_huatuo(text: str) -> str:
    """Step 0: eval.py's post-processing of a raw generation."""
    text = text.replace("</s>", "")
    return text[1:] if text.startswith(" ") else text


@functools.lru_cache(maxsize=32)
def _letter_regex(n_options: int) -> re.Pattern:
    letters = _LETTER_RANGE[:n_options]
    # Their prefix list ("is ", "(", "*", "#", quotes, CJK words...) reduces to: one CJK or non-word
    # character, or the start; they are consumed, which matters for adjacent letters ("A,B").
    return re.compile(rf"(?:[{_CJK}]|\W|^)(?![aA] )([{letters}])(?:[{_CJK}]|\W|$)")


def huatuo_extract(text: str, options: Mapping[str, str]) -> HuatuoMatch:
    """HuatuoGPT-o1's answer extraction (rules 1-5 of the module docstring); always returns a letter.

    Args:
        text: a completion, already cleaned (see `_clean_huatuo`) and non-empty.
        options: letter -> option text, in order.

    Returns:
        `HuatuoMatch` with the first- and last-match letters and the rule that produced them.

    >>> huatuo_extract("A or C? The answer is C", {"A": "x", "B": "y", "C": "z"})
    HuatuoMatch(first='C', last='C', rule='answer_is')
    >>> huatuo_extract("I'd go with B, though A. is tempting", {"A": "x", "B": "y", "C": "z"})
    HuatuoMatch(first='B', last='A', rule='letter')
    """
    if _FINAL_RESPONSE in text:
        text = text.split(_FINAL_RESPONSE)[-1]

    found = _ANSWER_IS.findall(text)
    if found:
        return HuatuoMatch(found[0], found[-1], "answer_is")

    found = _letter_regex(len(options)).findall(text)
    if found:
        return HuatuoMatch(found[0], found[-1], "letter")

    lowered = text.lower()
    labels = list(options)
    texts = [str(options[k]).lower() for k in labels]
    present = [i for i, t in enumerate(texts) if t in lowered]
    if present:
        # max() keeps the earliest option among ties, as their stable reverse sort does.
        last = max(present, key=lambda i: lowered.rindex(texts[i]))
        # Their "first" also takes the latest position, of each option's first occurrence (quirk).
        first = max(present, key=lambda i: lowered.index(texts[i]))
        return HuatuoMatch(labels[first], labels[last], "option_text")

    ratios = [difflib.SequenceMatcher(None, t, lowered).ratio() for t in texts]
    # Their loop updates on >=, so the last option wins ties (including all-zero similarity).
    best = max(range(len(labels)), key=lambda i: (ratios[i], i))
    return HuatuoMatch(labels[best], labels[best], "fuzzy")


class _Candidates(NamedTuple):
    """A row's huatuo letters: first/last (voted when k > 1) and the per-sample ones behind them."""

    first: str | None
    last: str | None
    firsts: list[str]
    lasts: list[str]
    rules: list[str]
    k: int


def _candidates(row: Mapping) -> _Candidates | None:
    """Extract from every non-empty sample; None when all samples are empty (their eval drops the row)."""
    cleaned = [_clean_huatuo(s) for s in _samples(row)]
    matches = [huatuo_extract(s, row["options"]) for s in cleaned if s]
    if not matches:
        return None
    firsts, lasts = [m.first for m in matches], [m.last for m in matches]
    return _Candidates(
        majority_vote(firsts), majority_vote(lasts), firsts, lasts, [m.rule for m in matches], len(cleaned)
    )


def _same_letter(letter: str | None, gold: str) -> bool:
    return letter is not None and letter.lower() == str(gold).lower()


def score_huatuo(predictions: Iterable[Mapping]) -> ScoreResult:
    """Score as HuatuoGPT-o1's published evaluation does (module docstring, steps 0-6). Optimistic.

    Args:
        predictions: prediction rows (see module docstring).

    Returns:
        `ScoreResult` with scorer "huatuo"; each benchmark carries `accuracy_first`, `accuracy_last`
        and the `selected` side.

    >>> rows = [{"id": "q1", "benchmark": "medqa", "options": {"A": "Aspirin", "B": "Heparin"},
    ...          "gold": "B", "completion": "Not A. The answer is B."}]
    >>> b = score_huatuo(rows).benchmarks["medqa"]
    >>> b.accuracy, b.accuracy_first, b.accuracy_last, b.selected
    (1.0, 1.0, 1.0, 'last')
    """
    rows = _check_rows(predictions)
    cands = [_candidates(row) for row in rows]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row["benchmark"]), []).append(i)

    verdicts: dict[int, Verdict] = {}  # by row index, filled benchmark by benchmark
    benchmarks = {}
    for bench, indices in groups.items():
        live = [i for i in indices if cands[i] is not None]
        n = len(live)
        acc_first = sum(_same_letter(cands[i].first, rows[i]["gold"]) for i in live) / n if n else math.nan
        acc_last = sum(_same_letter(cands[i].last, rows[i]["gold"]) for i in live) / n if n else math.nan
        # The side is chosen after comparing with the gold answers (step 6); their ">" sends ties to "last".
        selected = "first" if acc_first > acc_last else "last"

        for i in indices:
            row, c = rows[i], cands[i]
            common = {"id": str(row["id"]), "benchmark": bench, "gold": row["gold"]}
            if c is None:
                verdicts[i] = Verdict(
                    **common, letter=None, rule="dropped_empty", correct=False, counted=False
                )
                continue
            letter, side = (c.first, c.firsts) if selected == "first" else (c.last, c.lasts)
            verdicts[i] = Verdict(
                **common,
                letter=letter,
                rule=_rule_of(letter, side, c.rules),
                correct=_same_letter(letter, row["gold"]),
                letter_first=c.first,
                letter_last=c.last,
                sample_letters=tuple(side) if c.k > 1 else (),
            )
        benchmarks[bench] = _summarise(
            bench,
            [verdicts[i] for i in indices],
            accuracy_first=acc_first,
            accuracy_last=acc_last,
            selected=selected,
        )
    return ScoreResult("huatuo", benchmarks, [verdicts[i] for i in range(len(rows))])


# --- registry --------------------------------------------------------------------------------------

SCORERS: dict[str, Callable[[Iterable[Mapping]], ScoreResult]] = {
    "strict": score_strict,
    "huatuo": score_huatuo,
}


def score(predictions: Iterable[Mapping], scorer: str = "strict") -> ScoreResult:
    """Score prediction rows with a scorer from `SCORERS`.

    Args:
        predictions: prediction rows (see module docstring).
        scorer: "strict" (ours) or "huatuo" (HuatuoGPT-o1's scorer; comparable with their tables only
            under their whole protocol, see `medr1.task.protocols`).

    Returns:
        `ScoreResult`: per-benchmark `BenchmarkScore`s and per-row `Verdict`s.

    Raises:
        ValueError: unknown scorer, or a malformed / duplicated row.

    >>> rows = [{"id": "q1", "benchmark": "pubmedqa", "options": {"A": "yes", "B": "no", "C": "maybe"},
    ...          "gold": "C", "completion": "hard to say"}]
    >>> score(rows, "huatuo").rows[0].rule   # strict would leave this unparsed
    'fuzzy'
    """
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; choose from {sorted(SCORERS)}")
    return SCORERS[scorer](predictions)
