"""Known benchmarks (`KNOWN_BENCHMARKS`: where each lives locally and on the Hugging Face hub) and
loading them from the hub, one converter per hub row layout.

The hub is a fallback for machines without the local copy (`medr1.data.sources`); every converter is
testable on local files that mimic its rows (`hub_loader`). `datasets` is imported only when the hub is
really used, so importing `medr1.data` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from medr1.data.published import convert_gpqa_row  # the converter lives with the other published-set code
from medr1.data.schema import (
    LETTERS,
    MAX_OPTIONS,
    DataError,
    LoadedQuestions,
    LoadReport,
    OnError,
    Question,
    _check_on_error,
    _finish,
)
from medr1.data.sources import DATA_DIR_ENV, META_FIELDS, PUBMEDQA_OPTIONS, pubmedqa_official_test_ids

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
            (a local copy of FreedomIntelligence/Medical_Multimodal_Evaluation_Data, `medr1.data.images`).
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
