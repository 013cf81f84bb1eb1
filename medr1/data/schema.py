"""The question record and its contract: `Question`, `DataError`, and what a load reports.

Every benchmark becomes a list of `Question` records (the contract in docs/ARCHITECTURE.md): 2 to 26
options, letters consecutive from "A", the answer one of them. The option limits and letters are defined
here once (`LETTERS`, `MIN_OPTIONS`, `MAX_OPTIONS`); prompts and answer extraction import them.

Validation is strict and loud. A wrong answer letter or a silently dropped line changes an accuracy by
a fraction of a point, which is the size of the effects we report; so every `DataError` names the file,
the 1-based line (or record id) and the problem, and lenient loading (`on_error="skip"`) still logs and
returns what it skipped (`LoadReport`).

Loaders return a `LoadedQuestions`: a plain `list[Question]` that also carries `.report`, so lenient
loading needs no second return value and strict callers can ignore it.

Standard library only: everything else in `medr1.data`, `medr1.task.prompts` and `medr1.task.answers` builds on it.
"""

from __future__ import annotations

import logging
import os
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
MIN_OPTIONS, MAX_OPTIONS = 2, 26

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
        images: absolute paths of the question's images, checked at load time (`medr1.data.images`); empty
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



def question_identity(q: Question) -> str:
    """Normalized context + question + the gold option's text: what makes two records one question.

    The distractors are left out, so the same question with 4 and with 5 options (medqa and
    medqa_5options), or with MMLU-Pro's added distractors (mmlu and mmlu-pro), is one question; while
    generic stems ("Which of the following is true?") with different answers stay different questions.
    """
    context = q.meta.get("context") if isinstance(q.meta.get("context"), str) else ""
    return normalize_text(f"{context} {q.question}") + "\x1f" + normalize_text(q.options[q.answer])
