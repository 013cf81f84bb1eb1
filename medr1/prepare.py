"""Data preparation for a run: evaluation sets, the decontaminated training pool, and their data card.

The training job rebuilds the same pool from the same params (the build is deterministic given the
seed), so this step is for inspection and the record: it writes what went in and what was removed into
`runs/<name>/data/`, and the hashes of both into the manifest, so a reviewer can check that no test
question reached training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
from medr1.paths import resolve_repo_path
from medr1.runs import RunDir, atomic_write_json, atomic_write_text, write_manifest


@dataclass
class PreparedData:
    pool: list[Question]
    report: DecontaminationReport
    evals: dict[str, list[Question]]
    card: dict[str, Any]
    hashes: dict[str, str]


def data_dir_of(params: Params) -> str | None:
    """params.data_dir, relative to the repo root when relative (notebooks run from other directories)."""
    return str(resolve_repo_path(params.data_dir)) if params.data_dir else None


def prepare_data(params: Params, *, write: bool = True) -> PreparedData:
    """Load the evaluation sets and build the training pool exactly as training will.

    Returns:
        PreparedData with the pool, the decontamination report, the evaluation questions, a data card
        over both, and sha256 hashes for the manifest.
    """
    data_dir = data_dir_of(params)
    evals = {name: load_benchmark(name, params.eval_split, data_dir, limit=params.eval_limit, sample_seed=params.seed)
             for name in params.eval_benchmarks}
    from medr1.protocols import decontamination_sets

    pool, report = build_training_pool(params.train_sources, eval_sets=decontamination_sets(params),
                                       seed=params.seed, limit=params.train_limit, data_dir=data_dir,
                                       ngram_size=params.ngram_size)
    card = data_card([*pool, *(q for qs in evals.values() for q in qs)])
    hashes = {"train_pool": questions_hash(pool), **{f"eval:{k}": questions_hash(v) for k, v in evals.items()}}
    if write:
        run = RunDir(params.run_dir)
        out = run.path / "data"
        atomic_write_text(out / "train_pool.jsonl",
                          "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in pool))
        atomic_write_json(out / "decontamination.json", report.to_dict())
        atomic_write_text(out / "data_card.md", "\n\n".join(
            f"## {title}\n\n```\n{frame.to_string()}\n```"
            for title, frame in card.items()))
        write_manifest(run, job="data", params=params.to_dict(), data_hashes=hashes,
                       extra={"decontamination": {"removed": len(report.removed), "by_reason": report.by_reason,
                                                  "by_eval_source": report.by_eval_source,
                                                  "by_eval_set": report.removed_by_eval_set}})
    return PreparedData(pool, report, evals, card, hashes)
