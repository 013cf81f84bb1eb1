"""Questions in, validated, decontaminated; and a data card that says what went in.

Every benchmark becomes a list of `Question` records (the contract in docs/ARCHITECTURE.md). The local
copy under `../shared/benchmarks` (or `$MEDR1_DATA_DIR`) is the reference: it is what the reported
numbers were computed on, so it always wins over the Hugging Face hub, which is only a fallback for
machines without it. Why it is built this way:

- Validation is strict and loud. A wrong answer letter or a silently dropped line changes an accuracy
  by a fraction of a point, which is the size of the effects we report; so every `DataError` names the
  file, the 1-based line (or record id) and the problem, and lenient loading (`on_error="skip"`) still
  logs and returns what it skipped (`LoadReport`).
- No torch, no pandas, no `datasets` at import time: `prompts`, `rewards` and the CLI import this
  module, and `datasets` is only needed on the hub path.
- Test questions must never reach training. `build_training_pool` removes any training question whose
  normalized text equals an evaluation question's, or that shares a 13-word n-gram with one (the
  GPT-3 / Llama contamination convention), and reports each removal.

Loaders return a `LoadedQuestions`: a plain `list[Question]` that also carries `.report`, so lenient
loading needs no second return value and strict callers can ignore it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from medr1.paths import REPO_ROOT

log = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
MIN_OPTIONS, MAX_OPTIONS = 2, 26
DATA_DIR_ENV = "MEDR1_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "benchmarks"
# Row fields copied into `meta` when present: they are what per-subject breakdowns are made from.
META_FIELDS = ("subject", "category", "src", "meta_info")
# Rows of visual questions also carry `images` (paths relative to the data file; see medr1.images) and
# `modality` ("MRI", "CT", "X-ray", ...), kept in meta so results split by it.
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}

OnError = Literal["raise", "skip"]


# --------------------------------------------------------------------------------------------------
# Errors and the record type
# --------------------------------------------------------------------------------------------------


class DataError(ValueError):
    """A benchmark file or record is unusable; the message says where and why.

    Args:
        problem: what is wrong, in words.
        path: the file (or hub dataset id) the record came from.
        line: 1-based line number (row index for hub rows), when known.
        record_id: the record's id, when known.
        kind: a short stable key for the problem ("invalid_json", "missing_field", ...) used to group
            skipped records in a `LoadReport`.

    >>> str(DataError("invalid JSON", path="medqa/test.jsonl", line=3, kind="invalid_json"))
    'medqa/test.jsonl, line 3: invalid JSON'
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        record_id: str | None = None,
        kind: str = "invalid",
    ):
        self.problem, self.line, self.record_id, self.kind = problem, line, record_id, kind
        self.path = None if path is None else str(path)
        where = [self.path] if self.path else []
        if line is not None:
            where.append(f"line {line}")
        if record_id is not None:
            where.append(f"record {record_id!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


def _option_problem(options: Any) -> tuple[str, str] | None:
    """(kind, message) for an unusable options value, or None when it is a valid letter -> text dict."""
    if isinstance(options, list):
        return "options_list", f"options must be a {{letter: text}} object, got a list of {len(options)}"
    if not isinstance(options, dict):
        return "options_type", f"options must be a {{letter: text}} object, got {type(options).__name__}"
    n = len(options)
    if not MIN_OPTIONS <= n <= MAX_OPTIONS:
        return "option_count", f"needs {MIN_OPTIONS} to {MAX_OPTIONS} options, got {n}"
    keys = list(options)
    if keys != list(LETTERS[:n]):
        return (
            "option_letters",
            f"option letters must be consecutive from A in order ({', '.join(LETTERS[:n])}), "
            f"got {', '.join(map(str, keys))}",
        )
    for letter, text in options.items():
        if not isinstance(text, str) or not text.strip():
            return "empty_option", f"option {letter} must be non-empty text, got {text!r}"
    return None


def _answer_problem(answer: Any, options: dict[str, str]) -> tuple[str, str] | None:
    """(kind, message) when `answer` is not one of the option letters, with a hint when it is the text."""
    if isinstance(answer, str) and answer in options:
        return None
    letters = f"{next(iter(options))}-{next(reversed(options))}"
    if isinstance(answer, str):
        matches = [k for k, v in options.items() if v.strip().casefold() == answer.strip().casefold()]
        if matches:
            return (
                "answer_text",
                f"answer must be an option letter, got the answer text {answer!r} "
                f"(it matches option {matches[0]}; use {matches[0]!r})",
            )
        if len(answer) == 1 and answer.upper() in options:
            return "answer_letter", f"answer letter must be upper case, got {answer!r} (use {answer.upper()!r})"
        if len(answer) == 1 and answer.isalpha():
            return "answer_not_in_options", f"answer {answer!r} is not among the options {letters}"
        return "answer_text", f"answer must be an option letter ({letters}), got the text {answer!r}"
    return "answer_type", f"answer must be an option letter ({letters}), got {type(answer).__name__} {answer!r}"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question.

    Args:
        id: unique within its source.
        question: the question text (for PubMedQA JSONL it already includes the abstract).
        options: ordered letter -> text, 2 to 26 options, letters consecutive from "A".
        answer: the gold letter, one of `options`.
        source: benchmark name ("medqa", "pubmedqa-pqal", ...).
        meta: anything else: `context` (PubMedQA PQA-L abstract), `subject`, `category`, `split`; for
            visual questions `modality` and `image_sha256` (one content hash per image).
        images: absolute paths of the question's images, checked at load time (`medr1.images`); empty
            for text questions, whose records, dicts and hashes are then exactly what they were before.

    >>> q = Question("1", "2+2?", {"A": "3", "B": "4"}, "B", "toy")
    >>> q.letters, q.options[q.answer]
    (('A', 'B'), '4')
    """

    id: str
    question: str
    options: dict[str, str]
    answer: str
    source: str
    meta: dict = field(default_factory=dict)
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rid = self.id if isinstance(self.id, str) else repr(self.id)
        where = {"path": self.source or None, "record_id": rid}
        if not isinstance(self.id, str) or not self.id:
            raise DataError(f"id must be a non-empty string, got {self.id!r}", kind="bad_id", **where)
        if not isinstance(self.source, str) or not self.source:
            raise DataError(f"source must be a non-empty string, got {self.source!r}", kind="bad_source", **where)
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError("question text is empty", kind="empty_question", **where)
        if (problem := _option_problem(self.options)) is not None:
            raise DataError(problem[1], kind=problem[0], **where)
        if (problem := _answer_problem(self.answer, self.options)) is not None:
            raise DataError(problem[1], kind=problem[0], **where)
        if not isinstance(self.meta, dict):
            raise DataError(f"meta must be a dict, got {type(self.meta).__name__}", kind="bad_meta", **where)
        if not isinstance(self.images, tuple | list) or not all(isinstance(p, str) and p for p in self.images):
            raise DataError(f"images must be a list of paths, got {self.images!r}", kind="bad_images", **where)
        object.__setattr__(self, "images", tuple(self.images))
        # Copies, so that mutating the caller's dicts cannot change a validated (frozen) record.
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def letters(self) -> tuple[str, ...]:
        """The option letters in order, e.g. ("A", "B", "C", "D")."""
        return tuple(self.options)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `Question.from_dict(q.to_dict()) == q`."""
        return {
            "id": self.id,
            "question": self.question,
            "options": dict(self.options),
            "answer": self.answer,
            "source": self.source,
            "meta": dict(self.meta),
            **({"images": list(self.images)} if self.images else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Question:
        """Inverse of `to_dict`; raises `DataError` on missing or unknown keys.

        >>> Question.from_dict({"id": "1", "question": "?", "options": {"A": "x", "B": "y"},
        ...                     "answer": "A", "source": "toy"}).meta
        {}
        """
        required = {"id", "question", "options", "answer", "source"}
        if not isinstance(d, dict):
            raise DataError(f"expected a dict, got {type(d).__name__}", kind="not_object")
        rid = str(d.get("id")) if d.get("id") is not None else None
        if missing := sorted(required - d.keys()):
            raise DataError(f"missing field(s) {', '.join(missing)}", record_id=rid, kind="missing_field")
        if unknown := sorted(d.keys() - required - {"meta", "images"}):
            raise DataError(f"unknown field(s) {', '.join(unknown)}", record_id=rid, kind="unknown_field")
        return cls(**{k: d[k] for k in (*required, "meta", "images") if k in d})


# --------------------------------------------------------------------------------------------------
# Load reports (lenient mode never drops records silently)
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a loader read and what it skipped.

    Attributes:
        source: benchmark name.
        path: file or hub dataset id read.
        loaded: number of records returned.
        skipped: the `DataError` of each skipped record (empty in strict mode).
    """

    source: str
    path: str
    loaded: int = 0
    skipped: list[DataError] = field(default_factory=list)

    @property
    def reasons(self) -> dict[str, int]:
        """Skipped records counted by problem kind, most frequent first."""
        return dict(Counter(e.kind for e in self.skipped).most_common())

    def summary(self) -> str:
        """One line for logs, e.g. 'medqa: loaded 10, skipped 2 (invalid_json: 1, answer_text: 1)'."""
        text = f"{self.source}: loaded {self.loaded} from {self.path}"
        if self.skipped:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.items())
            text += f", skipped {len(self.skipped)} ({reasons}); first: {self.skipped[0]}"
        return text


class LoadedQuestions(list):
    """A `list[Question]` that also carries the `LoadReport` of the load that produced it."""

    def __init__(self, questions: Iterable[Question] = (), report: LoadReport | None = None):
        super().__init__(questions)
        self.report = report


def _finish(questions: list[Question], report: LoadReport) -> LoadedQuestions:
    report.loaded = len(questions)
    if report.skipped:
        log.warning("skipped %d bad record(s): %s", len(report.skipped), report.summary())
    return LoadedQuestions(questions, report)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


# --------------------------------------------------------------------------------------------------
# JSONL loader (the common format of every local benchmark)
# --------------------------------------------------------------------------------------------------


def _row_to_question(row: Any, source: str, *, path: str, line: int, split: str | None,
                     root: Path | None = None) -> Question:
    """Convert one parsed JSONL row; every problem raises a `DataError` naming path and line."""

    def fail(kind: str, problem: str, rid: str | None = None) -> DataError:
        return DataError(problem, path=path, line=line, record_id=rid, kind=kind)

    if not isinstance(row, dict):
        raise fail("not_object", f"expected a JSON object per line, got a JSON {type(row).__name__}")
    raw_id = row.get("realidx", row.get("id"))
    rid = f"{source}-{line}" if raw_id is None else str(raw_id)
    if missing := [k for k in ("question", "options", "answer_idx") if k not in row]:
        raise fail("missing_field", f"missing field(s) {', '.join(missing)}", rid)
    question, options, answer = row["question"], row["options"], row["answer_idx"]
    if not isinstance(question, str) or not question.strip():
        raise fail("empty_question", f"question text is empty (got {question!r})", rid)
    if (problem := _option_problem(options)) is not None:
        raise fail(*problem, rid)
    if (problem := _answer_problem(answer, options)) is not None:
        raise fail(*problem, rid)
    meta = {k: row[k] for k in META_FIELDS if row.get(k) is not None}
    if split is not None:
        meta["split"] = split
    images: tuple[str, ...] = ()
    if row.get("images", row.get("image")) is not None:  # a visual question (medr1.images checks every file)
        from medr1.images import resolve_images

        images, meta["image_sha256"] = resolve_images(
            row.get("images", row.get("image")), base_dir=Path(path).parent, root=root or Path(path).parent,
            path=path, line=line, record_id=rid)
    if (modality := row.get("modality")) is not None:
        from medr1.images import normalize_modality

        meta["modality"] = normalize_modality(modality) or modality
    return Question(id=rid, question=question, options=options, answer=answer, source=source, meta=meta,
                    images=images)


def load_jsonl(
    path: str | os.PathLike,
    source: str,
    *,
    on_error: OnError = "raise",
    split: str | None = None,
    root: str | os.PathLike | None = None,
) -> LoadedQuestions:
    """Load a benchmark JSONL file: one object per line with `question`, `options` {letter: text} and
    `answer_idx` (the gold letter); visual questions add `images` (paths relative to the file, inside
    `root`, default the file's folder) and `modality` (see `medr1.images`).

    The id is `realidx` (or `id`) when present, else `f"{source}-{line}"`. `subject`, `category`, `src`
    and `meta_info` are kept in `meta`. Blank lines are ignored.

    Args:
        path: the .jsonl file.
        source: benchmark name stored in each `Question.source`.
        on_error: "raise" stops at the first bad record; "skip" drops bad records, logs a warning with
            the count and reasons, and lists them in the returned `.report.skipped`.
        split: stored as `meta["split"]` when given.

    Returns:
        A `LoadedQuestions` (a list of `Question` with a `.report`).

    Raises:
        DataError: naming the file, the line and the problem (only the file when it is missing).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = p.write_text('{"question": "2+2?", "options": {"A": "3", "B": "4"}, "answer_idx": "B"}\\n')
    >>> [(q.id, q.answer) for q in load_jsonl(p, "toy")]
    [('toy-1', 'B')]
    """
    _check_on_error(on_error)
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path, kind="missing_file")
    report = LoadReport(source=source, path=str(path))
    questions: list[Question] = []
    first_line_of: dict[str, int] = {}
    for line_no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"invalid UTF-8 at byte {e.start} of the line ({raw[e.start : e.start + 4]!r})",
                    path=path, line=line_no, kind="invalid_utf8",
                ) from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"invalid JSON ({e.msg} at column {e.colno})", path=path, line=line_no, kind="invalid_json"
                ) from None
            q = _row_to_question(row, source, path=str(path), line=line_no, split=split,
                                 root=Path(root) if root is not None else None)
            if q.id in first_line_of:
                raise DataError(
                    f"duplicate id {q.id!r} (first on line {first_line_of[q.id]}, again on line {line_no})",
                    path=path, line=line_no, record_id=q.id, kind="duplicate_id",
                )
            first_line_of[q.id] = line_no
            questions.append(q)
        except DataError as e:
            if on_error == "raise":
                raise
            report.skipped.append(e)
    return _finish(questions, report)


# --------------------------------------------------------------------------------------------------
# PubMedQA PQA-L (the original release: ori_pqal.json + test_ground_truth.json)
# --------------------------------------------------------------------------------------------------


def _pqal_question(pmid: str, entry: Any, answer_word: str, *, path: str, split: str | None) -> Question:
    if not isinstance(entry, dict):
        raise DataError(f"expected an object, got {type(entry).__name__}", path=path, record_id=pmid,
                        kind="not_object")
    if missing := [k for k in ("QUESTION", "CONTEXTS") if k not in entry]:
        raise DataError(f"missing field(s) {', '.join(missing)}", path=path, record_id=pmid, kind="missing_field")
    contexts = entry["CONTEXTS"]
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DataError("CONTEXTS must be a list of strings", path=path, record_id=pmid, kind="bad_context")
    letter = {v: k for k, v in PUBMEDQA_OPTIONS.items()}.get(answer_word)
    if letter is None:
        raise DataError(f"answer must be yes, no or maybe, got {answer_word!r}", path=path, record_id=pmid,
                        kind="answer_not_in_options")
    meta: dict[str, Any] = {"context": "\n".join(contexts)}
    if entry.get("YEAR") is not None:
        meta["year"] = entry["YEAR"]
    if split is not None:
        meta["split"] = split
    try:
        return Question(id=pmid, question=entry["QUESTION"], options=dict(PUBMEDQA_OPTIONS), answer=letter,
                        source="pubmedqa-pqal", meta=meta)
    except DataError as e:
        raise DataError(e.problem, path=path, record_id=pmid, kind=e.kind) from None


def pubmedqa_official_test_ids(decisions: Sequence[tuple[str, str]]) -> set[str]:
    """The 500 PQA-L test ids, recomputed the way the PubMedQA authors' split script does.

    Their `split_dataset.py` seeds `random` with 0, groups pmids by `final_decision` (yes, no, maybe,
    in file order), shuffles each group and takes the second half of each as the test set. Used on the
    hub path, where `test_ground_truth.json` is not available; on the local copy the benchmarks test
    checks that this reproduces `test_ground_truth.json` exactly. It depends on the rows being in
    `ori_pqal.json` order.

    Args:
        decisions: (pmid, final_decision) in file order.

    Returns:
        The test pmids.
    """
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {"yes": [], "no": [], "maybe": []}
    for pmid, decision in decisions:
        by_label[decision].append(pmid)
    test: set[str] = set()
    for pmids in by_label.values():
        rng.shuffle(pmids)
        test.update(pmids[math.ceil(len(pmids) / 2) :])
    return test


def load_pubmedqa_pqal(directory: str | os.PathLike, split: str = "test", *,
                       on_error: OnError = "raise") -> LoadedQuestions:
    """Load PubMedQA PQA-L from its original files.

    `split="test"` gives the 500 pmids of `test_ground_truth.json` (answers from that file),
    `split="train"` the other 500 of `ori_pqal.json` (answers from `final_decision`). The question is
    `QUESTION`; the abstract goes to `meta["context"]` (its sections joined by newlines); options are
    yes / no / maybe.

    Args:
        directory: folder holding `ori_pqal.json` and `test_ground_truth.json`.
        split: "test" or "train".
        on_error: as in `load_jsonl`.

    Returns:
        A `LoadedQuestions` in `ori_pqal.json` order.
    """
    _check_on_error(on_error)
    directory = Path(directory)
    if split not in ("test", "train"):
        raise DataError(f"unknown split {split!r}; PQA-L has 'test' and 'train'", path=directory, kind="bad_split")
    ori_path, gt_path = directory / "ori_pqal.json", directory / "test_ground_truth.json"
    data, truth = _read_json_object(ori_path), _read_json_object(gt_path)
    if missing := sorted(set(truth) - set(data)):
        raise DataError(f"{len(missing)} test id(s) not in ori_pqal.json, e.g. {missing[0]!r}", path=gt_path,
                        kind="missing_record")
    report = LoadReport(source="pubmedqa-pqal", path=str(directory))
    questions = []
    for pmid, entry in data.items():
        if (pmid in truth) != (split == "test"):
            continue
        try:
            if split == "test":
                answer, where = truth[pmid], gt_path
                decision = entry.get("final_decision") if isinstance(entry, dict) else None
                if decision is not None and decision != answer:
                    raise DataError(f"ground truth {answer!r} disagrees with final_decision {decision!r} in "
                                    f"ori_pqal.json", path=gt_path, record_id=pmid, kind="answer_mismatch")
            else:
                answer, where = (entry.get("final_decision") if isinstance(entry, dict) else None), ori_path
            questions.append(_pqal_question(pmid, entry, answer, path=str(where), split=split))
        except DataError as e:
            if on_error == "raise":
                raise
            report.skipped.append(e)
    return _finish(questions, report)


def _read_json_object(path: Path) -> dict:
    if not path.is_file():
        raise DataError("file not found", path=path, kind="missing_file")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"invalid UTF-8 at byte {e.start}", path=path, kind="invalid_utf8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg} at line {e.lineno}, column {e.colno})", path=path,
                        line=e.lineno, kind="invalid_json") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object keyed by id, got {type(obj).__name__}", path=path,
                        kind="not_object")
    return obj


# --------------------------------------------------------------------------------------------------
# Hub converters: one per hub row layout, testable on local files that mimic it
# --------------------------------------------------------------------------------------------------


def _hub_id(row: dict, index: int, source: str, key: str | None = None) -> str:
    value = row.get(key) if key else None
    return f"{source}-{index}" if value is None else str(value)


def convert_medqa_row(row: dict, index: int, source: str) -> Question:
    """GBaker/MedQA-USMLE-4-options: `question`, `options` {A..D} (a struct, so absent letters may come
    back as None), `answer_idx` letter, `meta_info` (step1 / step2&3)."""
    options = {k: v for k, v in (row.get("options") or {}).items() if v is not None}
    meta = {k: row[k] for k in META_FIELDS if row.get(k) is not None}
    return Question(_hub_id(row, index, source, "id"), row.get("question"), options, row.get("answer_idx"),
                    source, meta)


def convert_medmcqa_row(row: dict, index: int, source: str) -> Question:
    """openlifescienceai/medmcqa: `opa`..`opd`, `cop` 0-3 (index of the correct option; -1 where the
    split is unlabeled), `subject_name`, `topic_name`, `choice_type`."""
    options = {letter: row.get(f"op{c}") for letter, c in zip("ABCD", "abcd", strict=True)}
    cop = row.get("cop")
    if not isinstance(cop, int) or not 0 <= cop <= 3:
        raise DataError(f"cop must be 0-3, got {cop!r} (the hub test split has no labels)",
                        record_id=_hub_id(row, index, source, "id"), kind="answer_not_in_options")
    meta = {"subject": row.get("subject_name"), "topic": row.get("topic_name"), "choice_type": row.get("choice_type")}
    return Question(_hub_id(row, index, source, "id"), row.get("question"), options, "ABCD"[cop], source,
                    {k: v for k, v in meta.items() if v is not None})


def convert_pubmedqa_row(row: dict, index: int, source: str) -> Question:
    """qiaojin/PubMedQA pqa_labeled: `pubid`, `question`, `context` {contexts: [...], labels, meshes},
    `final_decision` yes/no/maybe. The abstract goes to `meta["context"]`."""
    context = row.get("context") or {}
    contexts = context.get("contexts") if isinstance(context, dict) else None
    if not isinstance(contexts, list):
        raise DataError("context.contexts must be a list of strings", record_id=_hub_id(row, index, source, "pubid"),
                        kind="bad_context")
    answer = {v: k for k, v in PUBMEDQA_OPTIONS.items()}.get(row.get("final_decision"))
    return Question(_hub_id(row, index, source, "pubid"), row.get("question"), dict(PUBMEDQA_OPTIONS), answer,
                    source, {"context": "\n".join(contexts)})


def convert_mmlu_row(row: dict, index: int, source: str) -> Question:
    """cais/mmlu: `question`, `subject`, `choices` (list of 4), `answer` (int index)."""
    choices, answer = row.get("choices") or [], row.get("answer")
    options = {LETTERS[i]: c for i, c in enumerate(choices[:MAX_OPTIONS])}
    letter = LETTERS[answer] if isinstance(answer, int) and 0 <= answer < len(choices) else answer
    meta = {"subject": row["subject"]} if row.get("subject") else {}
    return Question(_hub_id(row, index, source, "id"), row.get("question"), options, letter, source, meta)


def convert_mmlu_pro_row(row: dict, index: int, source: str) -> Question:
    """TIGER-Lab/MMLU-Pro: `question_id`, `question`, `options` (list of up to 10), `answer` (letter),
    `answer_index` (int), `category`, `src`. The letter and the index must agree."""
    options = {LETTERS[i]: o for i, o in enumerate((row.get("options") or [])[:MAX_OPTIONS])}
    letter, idx = row.get("answer"), row.get("answer_index")
    qid = _hub_id(row, index, source, "question_id")
    if isinstance(idx, int) and isinstance(letter, str) and LETTERS[idx : idx + 1] != letter:
        raise DataError(f"answer {letter!r} disagrees with answer_index {idx}", record_id=qid, kind="answer_mismatch")
    meta = {k: row[k] for k in ("category", "src") if row.get(k) is not None}
    return Question(qid, row.get("question"), options, letter, source, meta)


MMLU_MEDICAL_SUBJECTS = frozenset(
    {"anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
     "professional_medicine"}
)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives locally and, as a fallback, on the hub.

    Attributes:
        description: one line for listings.
        subdir: folder under the data dir.
        hub_id, hub_config: `datasets.load_dataset` arguments (None: no hub fallback).
        hub_splits: our split name -> hub split name.
        converter: hub row -> `Question` (signature `(row, index, source)`).
        hub_filter: keeps only the rows that make up this benchmark (e.g. MMLU's medical subjects).
        layout: "jsonl" (`<subdir>/<split>.jsonl`), "pqal" (the original PubMedQA files) or "mmed"
            (a local copy of FreedomIntelligence/Medical_Multimodal_Evaluation_Data, `medr1.images`).
        modality: for "mmed", the modality kept ("MRI", "CT", "X-ray").
    """

    description: str
    subdir: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)
    converter: Callable[[dict, int, str], Question] | None = None
    hub_filter: Callable[[dict], bool] | None = None
    layout: Literal["jsonl", "pqal", "mmed"] = "jsonl"
    modality: str | None = None


KNOWN_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "medqa": BenchmarkSpec(
        "MedQA-USMLE, 4 options (US board exam, step 1 and step 2&3)", "medqa",
        "GBaker/MedQA-USMLE-4-options", None, {"train": "train", "test": "test"}, convert_medqa_row),
    "medqa_5options": BenchmarkSpec(
        "MedQA-USMLE, original 5 options; local only (no parquet copy on the hub)", "medqa_5options"),
    # The hub's MedMCQA test split has no labels (cop = -1), so "test" maps to the validation split
    # (4183 questions); the local copy is the 2816-question subset used by MedAgents-Bench.
    "medmcqa": BenchmarkSpec(
        "MedMCQA (Indian AIIMS/NEET PG entrance exams), 4 options", "medmcqa",
        "openlifescienceai/medmcqa", None, {"train": "train", "test": "validation", "validation": "validation"},
        convert_medmcqa_row),
    # Local pubmedqa is JSONL with the abstract already inside `question` (test: the 500 PQA-L test
    # pmids; train: 450 of the other 500). On the hub both names come from pqa_labeled, split by
    # `pubmedqa_official_test_ids`, so there "train" has all 500 non-test questions.
    "pubmedqa": BenchmarkSpec(
        "PubMedQA PQA-L, yes/no/maybe; abstract inside the question text", "pubmedqa",
        "qiaojin/PubMedQA", "pqa_labeled", {"train": "train", "test": "train"}, convert_pubmedqa_row),
    "pubmedqa-pqal": BenchmarkSpec(
        "PubMedQA PQA-L from the original release, abstract in meta['context']", "pubmedqa-pqal",
        "qiaojin/PubMedQA", "pqa_labeled", {"train": "train", "test": "train"}, convert_pubmedqa_row,
        layout="pqal"),
    "mmlu": BenchmarkSpec(
        "MMLU medical subjects (anatomy, clinical knowledge, college biology/medicine, medical genetics, "
        "professional medicine)", "mmlu",
        "cais/mmlu", "all", {"test": "test", "train": "auxiliary_train"}, convert_mmlu_row,
        lambda row: row.get("subject") in MMLU_MEDICAL_SUBJECTS),
    "mmlu-pro": BenchmarkSpec(
        "MMLU-Pro, health category, up to 10 options", "mmlu-pro",
        "TIGER-Lab/MMLU-Pro", None, {"test": "test"}, convert_mmlu_pro_row,
        lambda row: row.get("category") == "health"),
    # HuatuoGPT-o1's "MMLU-Pro medical" set: the health and biology categories (818 + 717 = 1,535).
    "mmlu-pro-med": BenchmarkSpec(
        "MMLU-Pro, health and biology categories, up to 10 options", "mmlu-pro-med",
        "TIGER-Lab/MMLU-Pro", None, {"test": "test"}, convert_mmlu_pro_row,
        lambda row: row.get("category") in ("health", "biology")),
    # Gated on the hub (accept its terms, then log in). Its only split is "train"; we evaluate on it.
    "gpqa": BenchmarkSpec(
        "GPQA main (graduate-level science), 4 options in a seeded order; gated hub repo", "gpqa",
        "Idavidrein/gpqa", "gpqa_main", {"test": "train"}, lambda row, i, s: _gpqa(row, i, s)),
    "afrimedqa": BenchmarkSpec(
        "AfriMed-QA expert MCQs, 5 options; local only (train split, 124 questions)", "afrimedqa"),
    # MedVLM-R1 (arXiv 2502.19634): train on the first MRI rows of HuatuoGPT-Vision's evaluation data, test on
    # the authors' MRI_CT_XRAY_300each_dataset.json (300 per modality). Local copies only (images are a zip on
    # the hub); `split="train"` reads the hub file, `split="test"` the authors' test file, both in one folder.
    **{f"medvlm-{key}": BenchmarkSpec(
        f"MedVLM-R1 {modality} visual questions (Medical_Multimodal_Evaluation_Data; test: the authors' 300)",
        "Medical_Multimodal_Evaluation_Data", layout="mmed", modality=modality)
       for key, modality in (("mri", "MRI"), ("ct", "CT"), ("xray", "X-ray"))},
}
# MedVLM-R1's training set: the first 600 MRI rows of the hub file (their paper; their released grpo.py takes 500).
MEDVLM_TRAIN_ROWS = 600


def _gpqa(row: dict, index: int, source: str) -> Question:
    from medr1.eval_sets import convert_gpqa_row  # the converter lives with the other published-set code

    return convert_gpqa_row(row, index, source)


def _datasets_hub_loader(hub_id: str, config: str | None, split: str) -> Iterable[dict]:
    """The real hub access; `datasets` is imported here only, so the rest of the module stays light."""
    import datasets

    return datasets.load_dataset(hub_id, config, split=split)


HubLoader = Callable[[str, "str | None", str], Iterable[dict]]


def load_from_hub(name: str, split: str = "test", *, on_error: OnError = "raise",
                  hub_loader: HubLoader | None = None) -> LoadedQuestions:
    """Load a known benchmark from the Hugging Face hub and convert its rows.

    Args:
        name: a `KNOWN_BENCHMARKS` name with a hub id.
        split: our split name, mapped through `spec.hub_splits`.
        on_error: as in `load_jsonl`; DataErrors name the hub id and the row index.
        hub_loader: `(hub_id, config, hub_split) -> rows` (dicts); defaults to `datasets.load_dataset`.
            Tests pass a loader reading local files laid out like the hub rows.

    Returns:
        A `LoadedQuestions` with `meta["split"] = split`.
    """
    _check_on_error(on_error)
    spec = KNOWN_BENCHMARKS[name]
    if spec.hub_id is None or spec.converter is None:
        raise DataError(f"{name} has no hub source; put its files under <data dir>/{spec.subdir}/ "
                        f"(or set ${DATA_DIR_ENV})", path=name, kind="no_hub")
    if split not in spec.hub_splits:
        raise DataError(f"{name} has no split {split!r} on the hub; available: {', '.join(spec.hub_splits)}",
                        path=spec.hub_id, kind="bad_split")
    loader = hub_loader or _datasets_hub_loader
    try:
        rows = list(loader(spec.hub_id, spec.hub_config, spec.hub_splits[split]))
    except Exception as e:  # network, auth, missing config: all end the same way for the user
        raise DataError(f"could not load {name} from the hub ({type(e).__name__}: {e}); put the files under "
                        f"<data dir>/{spec.subdir}/ or set ${DATA_DIR_ENV}", path=spec.hub_id,
                        kind="hub_unavailable") from e
    keep: set[str] | None = None
    if spec.layout == "pqal" or name == "pubmedqa":
        decisions = [(str(r.get("pubid")), r.get("final_decision")) for r in rows]
        test_ids = pubmedqa_official_test_ids(decisions)
        keep = test_ids if split == "test" else {p for p, _ in decisions} - test_ids
    where = f"{spec.hub_id}{'/' + spec.hub_config if spec.hub_config else ''}[{spec.hub_splits[split]}]"
    report = LoadReport(source=name, path=where)
    questions, seen = [], set()
    for index, row in enumerate(rows):
        if spec.hub_filter is not None and not spec.hub_filter(row):
            continue
        if keep is not None and str(row.get("pubid")) not in keep:
            continue
        try:
            try:
                q = spec.converter(row, index, name)
            except DataError as e:
                raise DataError(f"row {index}: {e.problem}", path=where, record_id=e.record_id,
                                kind=e.kind) from None
            if q.id in seen:
                raise DataError(f"row {index}: duplicate id {q.id!r}", path=where, record_id=q.id,
                                kind="duplicate_id")
            seen.add(q.id)
            questions.append(Question(q.id, q.question, q.options, q.answer, q.source, {**q.meta, "split": split}))
        except DataError as e:
            if on_error == "raise":
                raise
            report.skipped.append(e)
    return _finish(questions, report)


# --------------------------------------------------------------------------------------------------
# Benchmarks by name
# --------------------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The benchmark folder: the argument, else `$MEDR1_DATA_DIR`, else `<repo>/../shared/benchmarks`
    when it exists, else None (meaning: use the hub).

    An explicit argument or environment variable that points nowhere is an error rather than a silent
    switch to the hub, which would change what is being measured.

    >>> resolve_data_dir("/nonexistent")
    Traceback (most recent call last):
    ...
    medr1.data.DataError: /nonexistent: data dir does not exist
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_absolute() and not path.is_dir() and (REPO_ROOT / path).is_dir():
            path = REPO_ROOT / path  # params paths are relative to the repo root, wherever we run from
        if not path.is_dir():
            raise DataError("data dir does not exist", path=path, kind="missing_dir")
        return path
    if env := os.environ.get(DATA_DIR_ENV):
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"data dir does not exist (from ${DATA_DIR_ENV})", path=path, kind="missing_dir")
        return path
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def load_benchmark(
    name: str,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    sample_seed: int | None = None,
    hub_loader: HubLoader | None = None,
) -> LoadedQuestions:
    """Load a benchmark split by name.

    Local files win: `<data dir>/<name>/<split>.jsonl` (any name, so a new benchmark is a new folder),
    or the original PQA-L files for `pubmedqa-pqal`. A known benchmark missing from the data dir, or
    any known benchmark when no data dir resolves, comes from the hub (`load_from_hub`).

    Args:
        name: a `KNOWN_BENCHMARKS` key, a folder name under the data dir, or the path of a
            HuatuoGPT-o1-style `eval_data.json` (then `split` is one of its sets: "medmcqa" or their key).
        split: "test", "train", ... (the file stem).
        data_dir: overrides `resolve_data_dir`.
        on_error: as in `load_jsonl`; the skipped records are in `.report`.
        limit: keep `limit` questions: the first ones in file order, or with `sample_seed` a seeded random
            subset (see `sample_questions`). Evaluations sample: a prefix is biased wherever a file is
            sorted (PubMedQA's test file lists its 276 "yes" questions first).
        sample_seed: seed of the subset when `limit` is set.
        hub_loader: passed to `load_from_hub`.

    Returns:
        A `LoadedQuestions`, each question with `meta["split"] = split`.

    Raises:
        DataError: unknown name (listing the known names and the data dir searched), missing split,
            or any bad record in strict mode.

    >>> len(load_benchmark("medqa"))  # doctest: +SKIP
    1273
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if name.endswith(".json") and Path(name).expanduser().is_file():
        # A HuatuoGPT-o1-style eval file (their eval_data.json): `split` names the set in it.
        from medr1.eval_sets import load_eval_data_file

        questions = load_eval_data_file(Path(name).expanduser(), split)
        if limit is not None:
            kept = questions[:limit] if sample_seed is None else sample_questions(questions, limit, sample_seed)
            questions = LoadedQuestions(kept, questions.report)
        return questions
    if not split or any(c in split for c in "/\\") or split.startswith("."):
        raise DataError(f"split must be a plain name, got {split!r}", path=name, kind="bad_split")
    spec = KNOWN_BENCHMARKS.get(name)
    root = resolve_data_dir(data_dir)
    questions: LoadedQuestions | None = None
    folder = root / (spec.subdir if spec else name) if root is not None else None
    if folder is not None and folder.is_dir():
        if spec is not None and spec.layout == "pqal":
            questions = load_pubmedqa_pqal(folder, split, on_error=on_error)
        elif spec is not None and spec.layout == "mmed":
            from medr1.images import MEDVLM_TEST_FILE, MMED_FILE, load_mmed

            file = folder / (MEDVLM_TEST_FILE if split == "test" else MMED_FILE)
            if split not in ("train", "test"):
                raise DataError(f"{name} has splits 'train' ({MMED_FILE}) and 'test' ({MEDVLM_TEST_FILE})",
                                path=folder, kind="bad_split")
            questions = load_mmed(file, name, modality=spec.modality, split=split, root=root, on_error=on_error,
                                  first=MEDVLM_TRAIN_ROWS if split == "train" else None)
        else:
            file = folder / f"{split}.jsonl"
            if not file.is_file() and spec is not None and split in spec.hub_splits:
                # e.g. MedQA's train split for a paper recipe, where only the test split is local.
                log.info("%s has no local %s split under %s; trying the hub", name, split, folder)
                questions = load_from_hub(name, split, on_error=on_error, hub_loader=hub_loader)
            elif not file.is_file():
                available = sorted(p.stem for p in folder.glob("*.jsonl"))
                raise DataError(f"no split {split!r}; available: {', '.join(available) or 'none'}", path=file,
                                kind="bad_split")
            else:
                questions = load_jsonl(file, name, on_error=on_error, split=split, root=root)
    elif spec is not None:
        if root is not None:
            log.info("%s not under %s; trying the hub", name, root)
        questions = load_from_hub(name, split, on_error=on_error, hub_loader=hub_loader)
    else:
        searched = str(folder) if folder is not None else (
            f"no data dir (no argument, ${DATA_DIR_ENV} unset, {DEFAULT_DATA_DIR} absent)")
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(KNOWN_BENCHMARKS)}; "
                        f"searched: {searched}", path=name, kind="unknown_benchmark")
    if limit is not None:
        kept = questions[:limit] if sample_seed is None else sample_questions(questions, limit, sample_seed)
        questions = LoadedQuestions(kept, questions.report)
    return questions


def sample_questions(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """`n` questions picked by a seeded shuffle, returned in file order.

    Nested by construction: for one seed, a smaller `n` picks a subset of a larger `n`'s questions, so an
    evaluation resumed with a larger limit only adds questions.

    >>> qs = [Question(str(i), "q?", {"A": "x", "B": "y"}, "A", "toy") for i in range(10)]
    >>> [q.id for q in sample_questions(qs, 3, seed=0)] == [q.id for q in sample_questions(qs, 3, seed=0)]
    True
    >>> {q.id for q in sample_questions(qs, 3, 0)} <= {q.id for q in sample_questions(qs, 5, 0)}
    True
    """
    if n >= len(questions):
        return list(questions)
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    return [questions[i] for i in sorted(order[:n])]


# --------------------------------------------------------------------------------------------------
# Training pool and decontamination
# --------------------------------------------------------------------------------------------------

_PUNCT_RE = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE_RE = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Lowercase, Unicode NFKC, punctuation removed, whitespace collapsed.

    Punctuation becomes a space rather than nothing, so "mg/dL" and "mg dL" match but "non-toxic" does
    not fuse into "nontoxic" next to an unrelated word.

    >>> normalize_text("  Which  of the FOLLOWING is\\tcorrect?! ")
    'which of the following is correct'
    """
    s = unicodedata.normalize("NFKC", s).casefold()
    s = _PUNCT_RE.sub(" ", s).replace("_", " ")
    return _SPACE_RE.sub(" ", s).strip()


def _matching_text(q: Question) -> str:
    # The context is included so that a PQA-L test question (abstract in meta) is matched against a
    # training copy that has the abstract inside its question text.
    parts = [q.meta.get("context") or "", q.question, *q.options.values()]
    return normalize_text(" ".join(p for p in parts if isinstance(p, str)))


def question_identity(q: Question) -> str:
    """Normalized context + question + the gold option's text: what makes two records one question.

    The distractors are left out, so the same question with 4 and with 5 options (medqa and
    medqa_5options), or with MMLU-Pro's added distractors (mmlu and mmlu-pro), is one question; while
    generic stems ("Which of the following is true?") with different answers stay different questions.
    """
    context = q.meta.get("context") if isinstance(q.meta.get("context"), str) else ""
    return normalize_text(f"{context} {q.question}") + "\x1f" + normalize_text(q.options[q.answer])


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
    """

    ngram_size: int
    n_train: int = 0
    n_kept: int = 0
    n_eval: int = 0
    eval_sources: list[str] = field(default_factory=list)
    removed: list[Contamination] = field(default_factory=list)
    n_duplicates: int = 0
    removed_by_eval_set: dict[str, int] = field(default_factory=dict)

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
    from medr1.images import image_hashes

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
    """The GRPO training questions: sources' `split`, deduplicated, decontaminated, shuffled, limited.

    Duplicates (same normalized abstract, question and options; the first one kept) are removed across all
    sources. Decontamination is against the evaluation split of every eval set ("name" means its
    "test" split, "name:split" another one); an eval set's own training split is not held out. The
    shuffle uses `random.Random(seed)` and `limit` applies after decontamination, so a limited pool is
    a prefix of the full pool for the same seed. Ids stay unique: a question whose id an earlier source
    already used gets the id `source:id`.

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
    n_duplicates = 0
    for source in sources:
        for q in load_benchmark(source, split, data_dir, on_error=on_error, hub_loader=hub_loader):
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
