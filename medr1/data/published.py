"""Evaluation sets as published work defines them: their files, their layouts, and set fingerprints.

Our benchmark loaders (`medr1.data`) read each benchmark the way its local copy is laid out. Published
numbers, though, were computed on particular sets in a particular layout, and a number is only
comparable with theirs when the set is the same. This module holds what that takes:

- `set_fingerprint`: a hash of a set's normalized questions and gold answers, independent of order,
  ids, option letters and the distractors, so two copies of one set (a local file, the hub, someone's
  JSON) fingerprint alike and a different selection of questions does not.
- HuatuoGPT-o1's evaluation file (`evaluation/data/eval_data.json` in FreedomIntelligence/HuatuoGPT-o1:
  a JSON object, set name -> list of {"question", "options", "answer_idx", ...}), read directly with
  `load_eval_data_file`, keeping every question string byte for byte (their prompt uses it unstripped).
- Their PubMedQA layout, rebuilt from the PQA-L release (local `ori_pqal.json` or the hub's
  `pqa_labeled`): all 1,000 labeled questions, the abstract's sections joined by single spaces, a blank
  line, their reference sentence, a newline, then the question. Checked by eye against items of
  their file (e.g. pmids 12855939, 19711462, 20629769): same bytes.
- GPQA rows from its gated hub repo (Idavidrein/gpqa), options in a seeded order.

Data is not model code: nothing here imports torch, and `datasets` only on the hub path (in `medr1.data`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medr1.data.schema import LETTERS, DataError, LoadedQuestions, LoadReport, Question, question_identity
from medr1.data.sources import PUBMEDQA_OPTIONS

# Our name of each set of their file, found by a prefix of their key (lower-cased, "_" and " " as "-"):
# "MedMCQA_validation" -> medmcqa; "mmlu-pro" is tried before "mmlu".
HUATUO_SET_PREFIXES = (("medmcqa", "medmcqa"), ("medqa", "medqa"), ("pubmedqa", "pubmedqa"),
                       ("mmlu-pro", "mmlu-pro"), ("mmlu", "mmlu-pro"), ("gpqa", "gpqa"))


# --------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------


def set_fingerprint(questions: Iterable[Question]) -> str:
    """Order-independent hash of a set's normalized questions and gold answers (20 hex digits).

    Each question enters as `medr1.data.question_identity` (context, stem, gold option text): the
    distractors, letters, ids and order are left out, so a copy with shuffled options or a dropped "N/A"
    option is the same set. A duplicated question counts twice (the size is part of the identity).

    >>> a = Question("1", "What causes scurvy?", {"A": "Vitamin C deficiency", "B": "Iron"}, "A", "x")
    >>> b = Question("z", "what causes  SCURVY", {"A": "iron", "B": "vitamin C deficiency"}, "B", "y")
    >>> set_fingerprint([a]) == set_fingerprint([b])
    True
    """
    digests = sorted(hashlib.sha256(question_identity(q).encode()).hexdigest() for q in questions)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------------------
# HuatuoGPT-o1's eval_data.json
# --------------------------------------------------------------------------------------------------


def huatuo_set_name(key: str) -> str | None:
    """Our benchmark name for a set key of their file ("MedQA_USLME_test" -> "medqa"), None if unknown."""
    norm = key.lower().replace("_", "-").replace(" ", "-")
    for prefix, ours in HUATUO_SET_PREFIXES:
        if norm.startswith(prefix):
            return ours
    return None


def load_eval_data_file(path: str | os.PathLike, set_name: str) -> LoadedQuestions:
    """One set of a HuatuoGPT-o1-style eval file, question strings kept exactly as written.

    Args:
        path: their `eval_data.json` (or any file of that shape).
        set_name: their key ("MedMCQA_validation") or our benchmark name ("medmcqa").

    Returns:
        `LoadedQuestions` with source = our benchmark name, ids "<key>-<index>" (their file has no ids),
        `meta["split"]` = their key.

    Raises:
        DataError: unreadable file, unknown set (listing the keys), or a bad record (naming key and index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", path=path, kind="missing_file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not a UTF-8 JSON file ({e})", path=path, kind="invalid_json") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError("expected a JSON object: set name -> list of questions (HuatuoGPT-o1's eval_data.json)",
                        path=path, kind="not_object")
    keys = [k for k in data if k == set_name or huatuo_set_name(k) == set_name]
    if len(keys) != 1:
        known = ", ".join(f"{k} ({huatuo_set_name(k) or '?'})" for k in data)
        why = "several sets match" if keys else "no such set"
        raise DataError(f"{why} {set_name!r}; the file holds: {known}", path=path, kind="bad_split")
    key = keys[0]
    source = huatuo_set_name(key) or key
    questions = []
    for i, item in enumerate(data[key]):
        where = {"path": f"{path} [{key}]", "record_id": f"{key}-{i}"}
        if not isinstance(item, dict) or any(f not in item for f in ("question", "options", "answer_idx")):
            raise DataError(f"item {i} needs question, options and answer_idx", kind="missing_field", **where)
        try:
            questions.append(Question(f"{key}-{i}", item["question"], item["options"], item["answer_idx"], source,
                                      {"split": key}))
        except DataError as e:
            raise DataError(f"item {i}: {e.problem}", kind=e.kind, **where) from None
    return LoadedQuestions(questions, LoadReport(source=source, path=f"{path} [{key}]", loaded=len(questions)))


# --------------------------------------------------------------------------------------------------
# PubMedQA in their layout
# --------------------------------------------------------------------------------------------------


def huatuo_pubmedqa_text(contexts: list[str], question: str) -> str:
    """Abstract, reference sentence and question as one question string, in HuatuoGPT-o1's layout.

    >>> print(huatuo_pubmedqa_text(["Background.", "Results."], "Does X work?"))
    Background. Results.
    <BLANKLINE>
    Using the above document as a reference, please review the following question and choose the option you find most appropriate.
    Does X work?
    """
    return f"{' '.join(contexts)}\n\n{HUATUO_PUBMEDQA_REFERENCE}\n{question}"


def _pubmedqa_question(pmid: str, contexts: Any, question: Any, decision: Any, where: str) -> Question:
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DataError("contexts must be a list of strings", path=where, record_id=pmid, kind="bad_context")
    letter = {v: k for k, v in PUBMEDQA_OPTIONS.items()}.get(decision)
    if letter is None:
        raise DataError(f"final_decision must be yes, no or maybe, got {decision!r}", path=where, record_id=pmid,
                        kind="answer_not_in_options")
    if not isinstance(question, str) or not question.strip():
        raise DataError("question text is empty", path=where, record_id=pmid, kind="empty_question")
    return Question(pmid, huatuo_pubmedqa_text(contexts, question), dict(PUBMEDQA_OPTIONS), letter, "pubmedqa",
                    {"split": "pqa-l"})


def load_pubmedqa_huatuo(directory: str | os.PathLike) -> LoadedQuestions:
    """All 1,000 PQA-L questions from `ori_pqal.json`, in file order, in HuatuoGPT-o1's layout.

    Their set is the whole labeled release (the official 500-question test split plus the other 500),
    with the answer from `final_decision`.
    """
    path = Path(directory) / "ori_pqal.json"
    if not path.is_file():
        raise DataError("file not found", path=path, kind="missing_file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not a UTF-8 JSON file ({e})", path=path, kind="invalid_json") from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object keyed by pmid", path=path, kind="not_object")
    questions = []
    for pmid, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError("expected an object", path=path, record_id=pmid, kind="not_object")
        questions.append(_pubmedqa_question(pmid, entry.get("CONTEXTS"), entry.get("QUESTION"),
                                            entry.get("final_decision"), str(path)))
    return LoadedQuestions(questions, LoadReport(source="pubmedqa", path=str(path), loaded=len(questions)))


def pubmedqa_huatuo_from_hub_rows(rows: Iterable[dict], where: str) -> LoadedQuestions:
    """The same set from the hub's `qiaojin/PubMedQA` `pqa_labeled` rows (`pubid`, `question`,
    `context.contexts`, `final_decision`)."""
    questions = []
    for row in rows:
        context = row.get("context") or {}
        questions.append(_pubmedqa_question(str(row.get("pubid")), context.get("contexts") if isinstance(
            context, dict) else None, row.get("question"), row.get("final_decision"), where))
    return LoadedQuestions(questions, LoadReport(source="pubmedqa", path=where, loaded=len(questions)))


# --------------------------------------------------------------------------------------------------
# GPQA (gated hub repo Idavidrein/gpqa)
# --------------------------------------------------------------------------------------------------


def convert_gpqa_row(row: dict, index: int, source: str) -> Question:
    """Idavidrein/gpqa: `Question`, `Correct Answer`, `Incorrect Answer 1..3`, `Record ID`,
    `High-level domain`, `Subdomain`. The file lists the correct answer first, so the options are put in
    an order seeded by the record id: the same on every machine, and the gold letter is not always A."""
    rid = str(row.get("Record ID") or f"{source}-{index}")
    texts = [row.get("Correct Answer"), *(row.get(f"Incorrect Answer {i}") for i in (1, 2, 3))]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError("needs Correct Answer and Incorrect Answer 1-3", record_id=rid, kind="missing_field")
    order = list(range(4))
    random.Random(rid).shuffle(order)
    options = {LETTERS[i]: texts[j].strip() for i, j in enumerate(order)}
    meta = {k: row[s] for k, s in (("domain", "High-level domain"), ("subject", "Subdomain")) if row.get(s)}
    return Question(rid, str(row.get("Question") or "").strip(), options, LETTERS[order.index(0)], source, meta)


# HuatuoGPT-o1's eval_data.json puts this sentence between a PubMedQA abstract and its question.
HUATUO_PUBMEDQA_REFERENCE = ("Using the above document as a reference, please review the following question "
                             "and choose the option you find most appropriate.")


__all__ = ["HUATUO_PUBMEDQA_REFERENCE", "convert_gpqa_row", "huatuo_pubmedqa_text", "huatuo_set_name",
           "load_eval_data_file", "load_pubmedqa_huatuo",
           "pubmedqa_huatuo_from_hub_rows", "set_fingerprint"]
