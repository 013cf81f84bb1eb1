"""Questions in, validated, decontaminated; and a data card that says what went in.

One package, four jobs, one module each (imports point down the list):

- `schema`: the `Question` record, `DataError`, load reports; the option letters and limits.
- `sources`: benchmark files on disk (JSONL, PubMedQA PQA-L) and where the local copy lives.
- `hub`: the known benchmarks and their Hugging Face hub fallback, one converter per row layout.
- `benchmarks`: `load_benchmark`, a split by name (local first, hub as fallback), seeded subsets.
- `pool`: the training pool, decontaminated against the evaluation sets; `questions_hash`, `data_card`.

The public names are re-exported here, so `from medr1.data import Question, load_benchmark` is the
way in. No torch, no pandas, no `datasets` at import time: `prompts`, `answers`, `rewards` and the CLI
import this package, and `datasets` is only needed on the hub path.
"""

from medr1.data.benchmarks import FIT_BENCHMARK, FIT_LABEL, benchmark_title, load_benchmark, sample_questions
from medr1.data.hub import (
    KNOWN_BENCHMARKS,
    MEDVLM_TRAIN_ROWS,
    MMLU_MEDICAL_SUBJECTS,
    BenchmarkSpec,
    HubLoader,
    convert_medmcqa_row,
    convert_medqa_row,
    convert_mmlu_pro_row,
    convert_mmlu_row,
    convert_pubmedqa_row,
    load_from_hub,
)
from medr1.data.pool import (
    Contamination,
    DecontaminationReport,
    build_training_pool,
    data_card,
    decontaminate,
    questions_hash,
    without_placeholder_options,
)
from medr1.data.schema import (
    LETTERS,
    MAX_OPTIONS,
    MIN_OPTIONS,
    DataError,
    LoadedQuestions,
    LoadReport,
    OnError,
    Question,
    normalize_text,
    question_identity,
)
from medr1.data.sources import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    META_FIELDS,
    PUBMEDQA_OPTIONS,
    load_jsonl,
    load_pubmedqa_pqal,
    pubmedqa_official_test_ids,
    resolve_data_dir,
)

__all__ = [
    "DATA_DIR_ENV", "DEFAULT_DATA_DIR", "KNOWN_BENCHMARKS", "LETTERS", "MAX_OPTIONS", "MEDVLM_TRAIN_ROWS",
    "META_FIELDS", "MIN_OPTIONS", "MMLU_MEDICAL_SUBJECTS", "PUBMEDQA_OPTIONS", "BenchmarkSpec", "Contamination",
    "DataError", "DecontaminationReport", "HubLoader", "LoadReport", "LoadedQuestions", "OnError", "Question",
    "build_training_pool", "convert_medmcqa_row", "convert_medqa_row", "convert_mmlu_pro_row", "convert_mmlu_row",
    "convert_pubmedqa_row", "data_card", "decontaminate", "load_benchmark", "load_from_hub", "load_jsonl",
    "load_pubmedqa_pqal", "normalize_text", "pubmedqa_official_test_ids", "question_identity", "questions_hash",
    "resolve_data_dir", "sample_questions", "without_placeholder_options",
    "FIT_BENCHMARK", "FIT_LABEL", "benchmark_title",
]
