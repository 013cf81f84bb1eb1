"""Benchmark files on disk: the JSONL layout every local benchmark uses, PubMedQA PQA-L's original
release, and where the local copy lives.

The local copy under `../shared/benchmarks` (or `$MEDR1_DATA_DIR`) is the reference: it is what the
reported numbers were computed on, so it always wins over the Hugging Face hub (`medr1.data.hub`),
which is only a fallback for machines without it. An explicit data dir that points nowhere is an error,
never a silent switch to the hub. Every bad record raises a `DataError` naming the file and the line.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medr1.data.images import normalize_modality, resolve_images
from medr1.data.schema import (
    DataError,
    LoadedQuestions,
    LoadReport,
    OnError,
    Question,
    _answer_problem,
    _check_on_error,
    _finish,
    _option_problem,
)
from medr1.paths import REPO_ROOT

DATA_DIR_ENV = "MEDR1_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "benchmarks"
# Row fields copied into `meta` when present: they are what per-subject breakdowns are made from.
META_FIELDS = ("subject", "category", "src", "meta_info")
# Rows of visual questions also carry `images` (paths relative to the data file; see medr1.data.images) and
# `modality` ("MRI", "CT", "X-ray", ...), kept in meta so results split by it.
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}


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
    if row.get("images", row.get("image")) is not None:  # a visual question (medr1.data.images checks every file)

        images, meta["image_sha256"] = resolve_images(
            row.get("images", row.get("image")), base_dir=Path(path).parent, root=root or Path(path).parent,
            path=path, line=line, record_id=rid)
    if (modality := row.get("modality")) is not None:

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
    `root`, default the file's folder) and `modality` (see `medr1.data.images`).

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
# Where the local copy is
# --------------------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The benchmark folder: the argument, else `$MEDR1_DATA_DIR`, else `<repo>/../shared/benchmarks`
    when it exists, else None (meaning: use the hub).

    An explicit argument or environment variable that points nowhere is an error rather than a silent
    switch to the hub, which would change what is being measured.

    >>> resolve_data_dir("/nonexistent")
    Traceback (most recent call last):
    ...
    medr1.data.schema.DataError: /nonexistent: data dir does not exist
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
