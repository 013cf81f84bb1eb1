"""Data preparation for a run: evaluation sets, the decontaminated training pool, and their data card.

The training job rebuilds the same pool from the same params (the build is deterministic given the
seed), so this step is for inspection and the record: it writes what went in and what was removed into
`runs/<name>/data/`, and the hashes of both into the manifest, so a reviewer can check that no test
question reached training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medr1.config import Params
from medr1.data import (
    DecontaminationReport,
    Question,
    build_training_pool,
    data_card,
    load_benchmark,
    questions_hash,
)
from medr1.option_order import shuffle_report
from medr1.paths import resolve_repo_path
from medr1.runs import RunDir, atomic_write_json, atomic_write_text, write_manifest


@dataclass
class PreparedData:
    pool: list[Question]
    report: DecontaminationReport
    evals: dict[str, list[Question]]
    card: dict[str, Any]
    hashes: dict[str, str]
    shuffle: dict[str, Any]


def data_dir_of(params: Params) -> str | None:
    """params.data_dir, relative to the repo root when relative (notebooks run from other directories)."""
    return str(resolve_repo_path(params.data_dir)) if params.data_dir else None


def training_pool(params: Params) -> tuple[list[Question], list[Question], DecontaminationReport]:
    """(training questions, validation questions, decontamination report) of a run.

    The validation split is the first `validation_size` questions of the decontaminated pool (which
    `build_training_pool` shuffled with the run's seed); `train_limit` applies to the rest. Training
    calls this too, so what it trains on never includes a validation question, and tuning done on the
    validation split never looks at a test question.
    """
    from medr1.protocols import decontamination_sets

    pool, report = build_training_pool(params.train_sources, eval_sets=decontamination_sets(params),
                                       seed=params.seed, limit=None, data_dir=data_dir_of(params),
                                       ngram_size=params.ngram_size)
    if params.validation_size >= len(pool) and params.validation_size:
        raise ValueError(f"validation_size={params.validation_size} leaves no training question (the pool has "
                         f"{len(pool)} after decontamination)")
    validation, train = pool[:params.validation_size], pool[params.validation_size:]
    return (train if params.train_limit is None else train[:params.train_limit]), validation, report


def write_validation(run: RunDir, validation: list[Question]) -> None:
    """The validation split as a local benchmark file (`<run>/data/validation/validation.jsonl`), so that
    `load_benchmark("validation", "validation", data_dir=<run>/data)` and `medr1 eval` read it.

    Images of visual questions are copied beside it (`data/images/<content hash><suffix>`): image paths must
    stay inside the data directory they are read from (`medr1.images`), and a copy keeps the split
    readable when the source data moves.
    """
    import hashlib
    import shutil

    data = run.path / "data"
    rows = []
    for q in validation:
        row = {"id": q.id, "question": q.question, "options": q.options, "answer_idx": q.answer, "source": q.source}
        if q.images:
            images = []
            for src in map(Path, q.images):
                target = data / "images" / (hashlib.sha256(src.read_bytes()).hexdigest()[:16] + src.suffix.lower())
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    shutil.copyfile(src, target)
                images.append(f"../images/{target.name}")
            row["images"] = images
        if q.meta.get("modality"):
            row["modality"] = q.meta["modality"]
        rows.append(row)
    atomic_write_text(data / "validation" / "validation.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def prepare_data(params: Params, *, write: bool = True) -> PreparedData:
    """Load the evaluation sets and build the training pool exactly as training will.

    Returns:
        PreparedData with the pool, the decontamination report, the evaluation questions, a data card
        over both, and sha256 hashes for the manifest.
    """
    data_dir = data_dir_of(params)
    evals = {name: load_benchmark(name, params.eval_split, data_dir, limit=params.eval_limit, sample_seed=params.seed)
             for name in params.eval_benchmarks}
    pool, validation, report = training_pool(params)
    card = data_card([*pool, *(q for qs in evals.values() for q in qs)])
    shuffle = shuffle_report(pool, seed=params.seed, shuffle_options=params.shuffle_options,
                             option_counts=params.train_option_counts)
    card["training gold letters, before and after option shuffling (first pass)"] = shuffle_table(shuffle)
    hashes = {"train_pool": questions_hash(pool), **({"validation": questions_hash(validation)} if validation else {}), **{f"eval:{k}": questions_hash(v) for k, v in evals.items()}}
    if write:
        run = RunDir(params.run_dir)
        out = run.path / "data"
        atomic_write_text(out / "train_pool.jsonl",
                          "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in pool))
        atomic_write_json(out / "decontamination.json", report.to_dict())
        if validation:
            write_validation(run, validation)
        atomic_write_text(out / "data_card.md", "\n\n".join(
            f"## {title}\n\n```\n{frame.to_string()}\n```"
            for title, frame in card.items()) + (
            f"\n\n{shuffle['n_fixed_order']} of {shuffle['n_questions']} training questions keep their option order "
            f"(an option refers to other options by letter or position); shuffle_options = "
            f"{str(params.shuffle_options).lower()}.\n"))
        write_manifest(run, job="data", params=params.to_dict(), data_hashes=hashes,
                       extra={"decontamination": {"removed": len(report.removed), "by_reason": report.by_reason,
                                                  "by_eval_source": report.by_eval_source,
                                                  "by_eval_set": report.removed_by_eval_set},
                              "option_shuffle": shuffle})
    return PreparedData(pool, report, evals, card, hashes, shuffle)


def shuffle_table(report: dict[str, Any]):
    """The data card's view of `medr1.option_order.shuffle_report`: gold-letter shares (%) per option
    count, as written and as GRPO sees them after shuffling, plus the questions kept in order."""
    import pandas as pd

    rows = []
    for when in ("before", "after"):
        for n, shares in report[f"gold_shares_{when}"].items():
            rows.append({"options": n, "when": when, **{k: round(100 * v, 1) for k, v in shares.items()}})
    table = pd.DataFrame(rows).set_index(["options", "when"]) if rows else pd.DataFrame()
    table.attrs["n_fixed_order"] = report["n_fixed_order"]
    return table
