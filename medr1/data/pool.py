"""The training pool: deduplicated, decontaminated against every evaluation set; its hash and data card.

Test questions must never reach training. `build_training_pool` removes any training question whose
normalized text equals an evaluation question's, or that shares a 13-word n-gram with one (the GPT-3 /
Llama contamination convention), and reports each removal. `questions_hash` fingerprints an ordered set
of questions for run manifests; `data_card` describes one (pandas is imported only there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from medr1.data.benchmarks import load_benchmark
from medr1.data.hub import HubLoader
from medr1.data.images import image_hashes
from medr1.data.option_order import refers_to_other_options  # imports medr1.data: not at module level
from medr1.data.schema import LETTERS, DataError, OnError, Question, normalize_text, question_identity

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Training pool and decontamination
# --------------------------------------------------------------------------------------------------

def _matching_text(q: Question) -> str:
    # The context is included so that a PQA-L test question (abstract in meta) is matched against a
    # training copy that has the abstract inside its question text.
    parts = [q.meta.get("context") or "", q.question, *q.options.values()]
    return normalize_text(" ".join(p for p in parts if isinstance(p, str)))


def _ngram_hashes(words: list[str], n: int) -> set[int]:
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


class Contamination(NamedTuple):
    """One training question removed because it matches an evaluation question."""

    train_id: str
    eval_id: str
    reason: str  # "exact" (same question text), "normalized" (same after normalize_text), "ngram",
    #              "containment" (a short evaluation question inside the training question, same options)
    #              or "image" (shows an image file of an evaluation question, byte for byte)
    train_source: str
    eval_source: str


@dataclass
class DecontaminationReport:
    """What decontamination (and, in `build_training_pool`, deduplication) removed.

    Attributes:
        ngram_size: words per n-gram.
        n_train: training questions examined.
        n_kept: training questions kept.
        n_eval: evaluation questions matched against.
        eval_sources: evaluation sources (and splits) used.
        removed: one `Contamination` per removed training question.
        n_duplicates: duplicates removed from the training pool before decontamination.
        removed_by_eval_set: removed questions per eval set ("name:split") they matched (build_training_pool).
        n_placeholder_options: training questions whose placeholder options ("N/A") were removed, or that
            were dropped for a placeholder gold (`without_placeholder_options`; build_training_pool).
    """

    ngram_size: int
    n_train: int = 0
    n_kept: int = 0
    n_eval: int = 0
    eval_sources: list[str] = field(default_factory=list)
    removed: list[Contamination] = field(default_factory=list)
    n_duplicates: int = 0
    removed_by_eval_set: dict[str, int] = field(default_factory=dict)
    n_placeholder_options: int = 0

    @property
    def by_reason(self) -> dict[str, int]:
        """Removed questions counted by reason."""
        return dict(Counter(m.reason for m in self.removed))

    @property
    def by_eval_source(self) -> dict[str, int]:
        """Removed questions counted by the source of the evaluation question they matched."""
        return dict(Counter(m.eval_source for m in self.removed))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the run manifest."""
        return {
            "ngram_size": self.ngram_size, "n_train": self.n_train, "n_kept": self.n_kept,
            "n_eval": self.n_eval, "eval_sources": list(self.eval_sources), "n_duplicates": self.n_duplicates,
            "n_placeholder_options": self.n_placeholder_options,
            "by_reason": self.by_reason, "by_eval_source": self.by_eval_source,
            "removed_by_eval_set": dict(self.removed_by_eval_set),
            "removed": [m._asdict() for m in self.removed],
        }


def decontaminate(
    train: Sequence[Question],
    eval_questions: Sequence[Question],
    *,
    ngram_size: int = 13,
    max_ngram_df: int | None = 10,
) -> tuple[list[Question], DecontaminationReport]:
    """Remove training questions that overlap an evaluation question.

    A training question goes if its question text equals an evaluation question's ("exact"), or does
    after `normalize_text` ("normalized"), or if its normalized text (abstract, question and options)
    shares any run of `ngram_size` words with an evaluation question's ("ngram"). Evaluation n-grams
    are kept as a set of hashes, so the cost is linear in the total text.

    Clinical vignettes share boilerplate ("which of the following is the most likely cause of this
    patient s" is 13 words and occurs in dozens of MedQA questions), so text found in `max_ngram_df`
    or more distinct evaluation questions is not evidence of a copy: such n-grams are ignored, and such
    question texts ("Which of the following is true?") only match through their options' n-grams. A
    real copy still shares the question's other n-grams. `max_ngram_df=None` uses every n-gram.
    "Distinct" is by `question_identity`: one question held by two benchmarks counts once.

    A question shorter than `ngram_size` words is also caught inside a longer training text
    ("containment"): its stem occurs there as a run of words, and the training options hold its gold
    answer and more than half of its options.

    Args:
        train: candidate training questions.
        eval_questions: every question that will be evaluated on.
        ngram_size: words per n-gram (13 as in GPT-3's contamination analysis).
        max_ngram_df: ignore text shared by this many distinct evaluation questions (None: never).

    Returns:
        (kept training questions in their order, report).

    >>> ev = [Question("e1", "What causes scurvy?", {"A": "vitamin C deficiency", "B": "iron"}, "A", "test")]
    >>> tr = [Question("t1", "what causes  SCURVY", {"A": "x", "B": "y"}, "A", "train")]
    >>> kept, rep = decontaminate(tr, ev)
    >>> kept, rep.by_reason
    ([], {'normalized': 1})
    """
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
    if max_ngram_df is not None and max_ngram_df < 2:
        raise ValueError(f"max_ngram_df must be >= 2 or None, got {max_ngram_df}")
    # Document frequency counts each distinct question once (`question_identity`): the same question in
    # two benchmarks (medqa and medqa_5options, mmlu and mmlu-pro), whose options differ, is one
    # document, so "shared by max_ngram_df questions" means max_ngram_df different questions.
    grams: dict[int, Question] = {}
    grams_of: dict[str, set[int]] = {}
    stems: dict[str, Question] = {}
    stem_questions: dict[str, set[str]] = {}
    exact: dict[str, Question] = {}
    for q in eval_questions:
        text, stem, identity = _matching_text(q), normalize_text(q.question), question_identity(q)
        exact.setdefault(q.question.strip(), q)
        stems.setdefault(stem, q)
        stem_questions.setdefault(stem, set()).add(identity)
        hashes = _ngram_hashes(text.split(), ngram_size)
        for h in hashes:
            grams.setdefault(h, q)
        grams_of.setdefault(identity, set()).update(hashes)
    gram_df: Counter[int] = Counter(h for hashes in grams_of.values() for h in hashes)
    generic: set[str] = set()
    if max_ngram_df is not None:
        for h, n in gram_df.items():
            if n >= max_ngram_df:
                del grams[h]
        generic = {s for s, ids in stem_questions.items() if len(ids) >= max_ngram_df}
        stems = {s: q for s, q in stems.items() if s not in generic}
        exact = {t: q for t, q in exact.items() if normalize_text(t) not in generic}
    # Questions shorter than ngram_size words have no n-gram of their own text: a copy with a prefix
    # ("Q12. Axonal transport is") or reordered options escapes the checks above. Such a question is
    # "contained" in a training question whose text holds its stem as a run of words and whose options
    # include its gold answer and most of its options.
    short: dict[str, list[Question]] = {}
    for stem, q in stems.items():
        if 0 < len(stem.split()) < ngram_size and not q.meta.get("context"):
            short.setdefault(stem, []).append(q)
    short_lengths = sorted({len(s.split()) for s in short})
    report = DecontaminationReport(
        ngram_size=ngram_size, n_train=len(train), n_eval=len(eval_questions),
        eval_sources=sorted({q.source for q in eval_questions}),
    )

    # Visual questions: "What can be observed in this image?" is generic text; the image is the question.
    eval_images = image_hashes(eval_questions)
    kept = []
    for q in train:
        match, reason = next((eval_images[h] for h in q.meta.get("image_sha256") or () if h in eval_images),
                             None), "image"
        if match is None:
            match, reason = exact.get(q.question.strip()), "exact"
        if match is None:
            match, reason = stems.get(normalize_text(q.question)), "normalized"
        if match is None:
            reason = "ngram"
            words = _matching_text(q).split()
            for i in range(len(words) - ngram_size + 1):
                if (match := grams.get(hash(tuple(words[i : i + ngram_size])))) is not None:
                    break
        if match is None and short:
            match, reason = _contained_short(q, short, short_lengths), "containment"
        if match is not None and reason != "image" and q.images and match.images:
            match = None  # two visual questions with the same words but different images are different questions
        if match is None:
            kept.append(q)
        else:
            report.removed.append(Contamination(q.id, match.id, reason, q.source, match.source))
    report.n_kept = len(kept)
    return kept, report


def _contained_short(q: Question, short: dict[str, list[Question]], lengths: list[int]) -> Question | None:
    """The short evaluation question whose stem is a run of words of `q`'s stem and whose gold answer
    and more than half of whose options are among `q`'s options; None if there is none."""
    words = normalize_text(q.question).split()
    train_options = {normalize_text(t) for t in q.options.values()}
    for n in lengths:
        for i in range(len(words) - n + 1):
            for e in short.get(" ".join(words[i : i + n]), ()):
                options = [normalize_text(t) for t in e.options.values()]
                if (normalize_text(e.options[e.answer]) in train_options
                        and 2 * sum(o in train_options for o in options) > len(options)):
                    return e
    return None


PLACEHOLDER_OPTIONS = frozenset({"n/a"})  # compared case-insensitively, after stripping


def without_placeholder_options(q: Question) -> Question | None:
    """`q` without the options whose text is a placeholder ("N/A"), letters reassigned in printed order
    (gold follows its text); `q` itself when it has none; None when the gold is a placeholder or fewer
    than two options would remain.

    Why: AfriMed-QA writes its true/false statements as five options, "True", "False", "N/A", "N/A",
    "N/A". Asked as written, three identical distractors make "C. N/A" an ambiguous answer by
    construction; shuffling and option-count cuts then move them around, and validation reads the
    model's handling of padding as its answer format. Measured on the demo's validation split (30
    AfriMed-QA questions, 6 of them padded true/false items): 6 of a trained adapter's 8 ambiguous
    greedy answers were "C. N/A". Only the training pool (and the validation split carved from it) is
    cleaned; evaluation sets stay as published.

    >>> q = Question("1", "Aspirin is an NSAID.", {"A": "True", "B": "N/A", "C": "False", "D": "n/a"}, "C", "toy")
    >>> p = without_placeholder_options(q)
    >>> p.options, p.answer
    ({'A': 'True', 'B': 'False'}, 'B')
    """
    kept = [(letter, text) for letter, text in q.options.items()
            if text.strip().lower() not in PLACEHOLDER_OPTIONS]
    if len(kept) == len(q.options):
        return q
    letters = [letter for letter, _ in kept]
    if q.answer not in letters or len(kept) < 2:
        return None

    if letters != list(LETTERS[:len(kept)]) and refers_to_other_options(q):
        return q  # "Both A and C" would point at other options once the letters moved; asked as written
    return dataclasses.replace(q, options={LETTERS[i]: text for i, (_, text) in enumerate(kept)},
                               answer=LETTERS[letters.index(q.answer)],
                               meta={**q.meta, "placeholder_options_removed": len(q.options) - len(kept)})


def _parse_eval_set(spec: str) -> tuple[str, str]:
    # "name" evaluates on its test split; "name:split" names another (afrimedqa ships only "train").
    # A trailing "?" marks a set used only where it can be loaded (GPQA: gated on the hub).
    name, _, split = spec.removesuffix("?").rpartition(":") if ":" in spec else (spec.removesuffix("?"), "", "")
    return name, split or "test"


def build_training_pool(
    sources: list[str],
    *,
    eval_sets: list[str],
    split: str = "train",
    seed: int = 0,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    ngram_size: int = 13,
    max_ngram_df: int | None = 10,
    on_error: OnError = "raise",
    hub_loader: HubLoader | None = None,
) -> tuple[list[Question], DecontaminationReport]:
    """The GRPO training questions: sources' `split`, cleaned, deduplicated, decontaminated, shuffled, limited.

    Placeholder options ("N/A") are removed first (`without_placeholder_options`). Duplicates (same
    normalized abstract, question and options; the first one kept) are removed across all sources.
    Decontamination is against the evaluation split of every eval set ("name" means its "test" split,
    "name:split" another one); an eval set's own training split is not held out. The shuffle uses
    `random.Random(seed)` and `limit` applies after decontamination, so a limited pool is a prefix of the
    full pool for the same seed. Ids stay unique: a question whose id an earlier source already used gets
    the id `source:id`.

    Args:
        sources: benchmark names whose `split` is trained on.
        eval_sets: benchmarks evaluated on ("name", "name:split"; a trailing "?" skips a set that cannot
            be loaded); their questions never reach the pool.
        split: the training split of each source.
        seed: shuffle seed.
        limit: keep at most this many questions.
        data_dir, on_error, hub_loader: as in `load_benchmark`.
        ngram_size, max_ngram_df: as in `decontaminate`.

    Returns:
        (questions, report); `report.n_duplicates` counts the duplicates removed.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    pool: list[Question] = []
    seen: set[tuple] = set()
    pool_ids: set[str] = set()
    n_duplicates = n_placeholder = 0
    for source in sources:
        for q in load_benchmark(source, split, data_dir, on_error=on_error, hub_loader=hub_loader):
            cleaned = without_placeholder_options(q)
            n_placeholder += cleaned is not q
            if cleaned is None:
                log.warning("training pool: %s question %s dropped: its gold option is a placeholder or fewer "
                            "than two real options remain (%s)", q.source, q.id, q.options)
                continue
            q = cleaned
            # Abstract + question + options, so that the same PubMedQA item in its JSONL layout (abstract
            # inside the question) and its PQA-L layout (abstract in meta) counts as one.
            # A visual question is its text and its images: the same wording about another scan is another question.
            key = (_matching_text(q), *(q.meta.get("image_sha256") or ()))
            if key in seen:
                n_duplicates += 1
                continue
            seen.add(key)
            if q.id in pool_ids:
                # Two sources may number their questions alike ("1", "2", ...); ids key the training dataset
                # and samples.jsonl, so the later one is namespaced by its source instead of shadowing.
                q = dataclasses.replace(q, id=f"{q.source}:{q.id}")
            pool_ids.add(q.id)
            pool.append(q)
    eval_questions: list[Question] = []
    set_of: dict[tuple[str, str], str] = {}  # (source, id) of an evaluation question -> its eval set
    used = []
    for eval_set in dict.fromkeys(eval_sets):
        name, eval_split = _parse_eval_set(eval_set)
        try:
            qs = load_benchmark(name, eval_split, data_dir, on_error=on_error, hub_loader=hub_loader)
        except DataError as e:
            if not eval_set.endswith("?"):
                raise
            log.warning("decontamination: optional eval set %s not available, not used (%s)", eval_set, e)
            continue
        used.append(f"{name}:{eval_split}")
        for q in qs:
            set_of.setdefault((q.source, q.id), f"{name}:{eval_split}")
        eval_questions += qs
    kept, report = decontaminate(pool, eval_questions, ngram_size=ngram_size, max_ngram_df=max_ngram_df)
    report.n_duplicates = n_duplicates
    report.n_placeholder_options = n_placeholder
    report.n_train += n_duplicates
    report.eval_sources = used
    report.removed_by_eval_set = dict(Counter(set_of[(m.eval_source, m.eval_id)] for m in report.removed))
    if report.removed or n_duplicates:
        log.info("training pool: %d duplicate(s) and %d contaminated question(s) removed %s", n_duplicates,
                 len(report.removed), report.by_eval_source)
    random.Random(seed).shuffle(kept)
    return (kept if limit is None else kept[:limit]), report


# --------------------------------------------------------------------------------------------------
# Hash and data card
# --------------------------------------------------------------------------------------------------


def questions_hash(questions: Iterable[Question]) -> str:
    """sha256 of the ordered records as canonical JSON (sorted keys, no spaces), for run manifests.

    Order matters: a reshuffled pool is a different training input.

    >>> q = Question("1", "2+2?", {"A": "3", "B": "4"}, "B", "toy")
    >>> questions_hash([q]) == questions_hash([Question.from_dict(q.to_dict())])
    True
    """
    h = hashlib.sha256()
    for q in questions:
        # Image files enter through meta["image_sha256"] (their content), not their machine-specific paths.
        h.update(json.dumps({k: v for k, v in q.to_dict().items() if k != "images"}, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def data_card(questions: Iterable[Question], split: str | None = None) -> dict[str, Any]:
    """Tables describing a set of questions (pandas DataFrames).

    Args:
        questions: any questions; their split is `meta["split"]`, else `split`, else "?".
        split: fallback split label.

    Returns:
        {"counts": questions per source and split,
         "options": number of questions per source and option count,
         "answers": gold-letter share per source (rows sum to 1; a skewed row means letter bias can
         score above chance),
         "length": question length in words per source (count, mean, min, median, p90, max)}.
    """
    import pandas as pd

    rows = [
        {"source": q.source, "split": q.meta.get("split", split or "?"), "n_options": len(q.options),
         "answer": q.answer, "words": len(q.question.split())}
        for q in questions
    ]
    df = pd.DataFrame(rows, columns=["source", "split", "n_options", "answer", "words"])
    counts = df.groupby(["source", "split"]).size().rename("questions").reset_index()
    options = pd.crosstab(df["source"], df["n_options"]).rename_axis(columns="n_options")
    answers = pd.crosstab(df["source"], df["answer"], normalize="index").rename_axis(columns="answer")
    length = df.groupby("source")["words"].agg(
        count="count", mean="mean", min="min", median="median", p90=lambda s: s.quantile(0.9), max="max")
    return {"counts": counts, "options": options, "answers": answers, "length": length}
