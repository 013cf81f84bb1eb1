"""Data preparation for a run, and its hand-over: evaluation sets, the decontaminated training pool (and the
validation split carved from it) and their data card, written into `runs/<name>/data/`; later stages read
those files back through `load_prepared` / `prepared_eval_sets` instead of rebuilding them.

The hand-over is checked, not trusted. `data/prepared.json` (written last) records the params that produced
the files (`PREPARED_KEYS`) and each file's sha256. A stage that finds no prepared.json, or one made from
other params, prepares again (the build is a deterministic function of those params, so this is what
`medr1 train` run alone does). A file whose hash no longer matches (edited or cut after preparation) is an
error, `PreparedDataError`, naming the file: training silently on other data than the record says would
void the decontamination guarantee.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medr1.config import Params
from medr1.data import (
    FIT_BENCHMARK,
    DecontaminationReport,
    Question,
    build_training_pool,
    data_card,
    load_benchmark,
    questions_hash,
)
from medr1.data.option_order import refers_to_other_options, shuffle_report
from medr1.paths import resolve_repo_path
from medr1.runs import RunDir, atomic_write_json, atomic_write_text, write_manifest
from medr1.task.protocols import decontamination_sets

log = logging.getLogger(__name__)

PREPARED_FILE = "prepared.json"  # written last by `prepare_data`: which params made the files, and their hashes
# The params the prepared files are a function of (data section, plus what decides the evaluation sets).
PREPARED_KEYS = ("seed", "data_dir", "train_sources", "train_limit", "validation_size", "decontaminate_against",
                 "ngram_size", "shuffle_options", "fit_check", "eval_permutations", "eval_benchmarks", "eval_split",
                 "eval_limit", "eval_protocol", "eval_data_file", "eval_subset_seed")


class PreparedDataError(ValueError):
    """A prepared file differs from what `data/prepared.json` recorded; the message names it and the fix."""


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

    pool, report = build_training_pool(params.train_sources, eval_sets=decontamination_sets(params),
                                       seed=params.seed, limit=None, data_dir=data_dir_of(params),
                                       ngram_size=params.ngram_size)
    if params.validation_size >= len(pool) and params.validation_size:
        raise ValueError(f"validation_size={params.validation_size} leaves no training question (the pool has "
                         f"{len(pool)} after decontamination)")
    validation, train = pool[:params.validation_size], pool[params.validation_size:]
    if params.fit_check:  # the fit check asks each question in orders training never uses: it needs some
        train = [q for q in train if len(q.options) >= 3 and not refers_to_other_options(q)]
    return (train if params.train_limit is None else train[:params.train_limit]), validation, report


def avoided_rotations(params: Params) -> int:
    """Option rotations (0..K-1 of each question as written) training must not use: the fit check's
    evaluation orders, K = eval_permutations; 0 (none) otherwise."""
    return params.eval_permutations if params.fit_check else 0


def write_validation(run: RunDir, validation: list[Question]) -> None:
    """The validation split as a local benchmark file (`<run>/data/validation/validation.jsonl`), so that
    `load_benchmark("validation", "validation", data_dir=<run>/data)` and `medr1 eval` read it.

    Images of visual questions are copied beside it (`data/images/<content hash><suffix>`): image paths must
    stay inside the data directory they are read from (`medr1.data.images`), and a copy keeps the split
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
    # The pool first: a bad training record is reported as such, before any evaluation set is read.
    pool, validation, report = training_pool(params)
    # The fit check's set is the training pool itself (asked in held-out option orders at evaluation).
    evals = {name: list(pool) if name == FIT_BENCHMARK else
             load_benchmark(name, params.eval_split, data_dir, limit=params.eval_limit,
                            sample_seed=params.eval_sample_seed)
             for name in params.eval_benchmarks}
    card = data_card([*pool, *(q for qs in evals.values() for q in qs)])
    shuffle = shuffle_report(pool, seed=params.seed, shuffle_options=params.shuffle_options,
                             option_counts=params.train_option_counts, avoid_rotations=avoided_rotations(params))
    card["training gold letters, before and after option shuffling (first pass)"] = shuffle_table(shuffle)
    hashes = {"train_pool": questions_hash(pool), **({"validation": questions_hash(validation)} if validation else {}),
              **{f"eval:{k}": questions_hash(v) for k, v in evals.items()}}
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
            f"{str(params.shuffle_options).lower()}.\n"
            f"{report.n_placeholder_options} questions of the training pool (validation included) had "
            f"placeholder options (\"N/A\") removed (`medr1.data.pool.without_placeholder_options`).\n"))
        write_manifest(run, job="data", params=params.to_dict(), data_hashes=hashes,
                       extra={"placeholder_options": report.n_placeholder_options,
                              "decontamination": {"removed": len(report.removed), "by_reason": report.by_reason,
                                                  "by_eval_source": report.by_eval_source,
                                                  "by_eval_set": report.removed_by_eval_set},
                              "option_shuffle": shuffle})
        _write_questions(out / "eval", evals)
        _record_prepared(params, out, hashes)
    return PreparedData(pool, report, evals, card, hashes, shuffle)


def shuffle_table(report: dict[str, Any]):
    """The data card's view of `medr1.data.option_order.shuffle_report`: gold-letter shares (%) per option
    count, as written and as GRPO sees them after shuffling, plus the questions kept in order."""
    import pandas as pd

    rows = []
    for when in ("before", "after"):
        for n, shares in report[f"gold_shares_{when}"].items():
            rows.append({"options": n, "when": when, **{k: round(100 * v, 1) for k, v in shares.items()}})
    table = pd.DataFrame(rows).set_index(["options", "when"]) if rows else pd.DataFrame()
    table.attrs["n_fixed_order"] = report["n_fixed_order"]
    return table


# --------------------------------------------------------------------------------------------------
# Hand-over: later stages read what was prepared
# --------------------------------------------------------------------------------------------------


def _write_questions(folder: Path, sets: dict[str, list[Question]]) -> None:
    for name, questions in sets.items():
        atomic_write_text(folder / f"{name}.jsonl",
                          "".join(json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in questions))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepared_params(params: Params) -> dict[str, Any]:
    """The params the prepared files depend on (`PREPARED_KEYS`), as recorded in prepared.json."""
    return {k: getattr(params, k) for k in PREPARED_KEYS}


def _record_prepared(params: Params, out: Path, hashes: dict[str, str]) -> None:
    files = [out / "train_pool.jsonl", out / "decontamination.json", *sorted((out / "eval").glob("*.jsonl"))]
    atomic_write_json(out / PREPARED_FILE, {
        "params": prepared_params(params), "question_hashes": hashes,
        "files": {str(f.relative_to(out)): _sha256(f) for f in files if f.is_file()}})


def _checked_record(params: Params) -> dict[str, Any] | None:
    """prepared.json of the run when it was made from these params, its files verified; None when absent or
    made from other params."""
    out = RunDir(params.run_dir).path / "data"
    try:
        record = json.loads((out / PREPARED_FILE).read_text())
    except (OSError, ValueError):
        return None
    if json.loads(json.dumps(prepared_params(params))) != record.get("params"):
        return None
    for name, digest in record.get("files", {}).items():
        if not (out / name).is_file() or _sha256(out / name) != digest:
            raise PreparedDataError(f"{out / name} differs from what preparation wrote ({out / PREPARED_FILE}); "
                                    f"delete {out} (or run with force: true) to prepare it again")
    return record


def load_prepared(params: Params) -> tuple[list[Question], dict[str, Any]]:
    """(training pool, decontamination report as a dict) that preparation wrote for this run, checked by hash;
    prepared first when absent or made from other params (`medr1 train` run alone).

    Raises:
        PreparedDataError: a prepared file was changed after preparation.
    """
    if _checked_record(params) is None:
        log.info("preparing the data of %s (no data/%s from these params)", params.run_name, PREPARED_FILE)
        prepare_data(params)
        if _checked_record(params) is None:
            raise PreparedDataError(f"preparing {params.run_dir / 'data'} did not leave a matching {PREPARED_FILE}")
    decontamination = RunDir(params.run_dir).path / "data" / "decontamination.json"
    return read_pool(params.run_dir), json.loads(decontamination.read_text())


def read_pool(run_dir: str | Path) -> list[Question]:
    """The training pool preparation wrote (`<run>/data/train_pool.jsonl`), [] when absent. Unchecked: for
    readers of a finished run (the report's figures); training reads it through `load_prepared`, which first
    checks it against the hash preparation recorded."""
    path = RunDir(run_dir).path / "data" / "train_pool.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Question.from_dict(json.loads(line)) for line in lines if line.strip()]


def load_validation(params: Params) -> list[Question]:
    """The validation split preparation wrote (`data/validation/validation.jsonl`), [] without one."""
    if not params.validation_size:
        return []
    return list(load_benchmark("validation", "validation", RunDir(params.run_dir).path / "data"))


def prepared_eval_sets(params: Params, names: list[str] | None = None) -> dict[str, list[Question]] | None:
    """The evaluation sets preparation wrote for this run (`data/eval/<name>.jsonl`), checked by hash; None when
    the run has none from these params (the caller then loads the benchmarks itself)."""
    record = _checked_record(params)
    if record is None:
        return None
    folder = RunDir(params.run_dir).path / "data" / "eval"
    names = list(params.eval_benchmarks) if names is None else names
    if not all((folder / f"{n}.jsonl").is_file() for n in names):
        return None
    return {n: [Question.from_dict(json.loads(line))
                for line in (folder / f"{n}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
            for n in names}
