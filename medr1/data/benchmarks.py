"""A benchmark split by name: the local copy first, the hub as fallback; seeded subsets.

`load_benchmark` is the one entry point evaluation, training and the notebooks use: any folder under the
data dir is a benchmark (a new benchmark is a new folder), known benchmarks come from the hub when they
are not local, and `limit` takes a seeded, nested subset rather than a prefix, since files are often
sorted (PubMedQA's test file lists its 276 "yes" questions first).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

from medr1.data.hub import KNOWN_BENCHMARKS, MEDVLM_TRAIN_ROWS, HubLoader, load_from_hub
from medr1.data.images import MEDVLM_TEST_FILE, MMED_FILE, load_mmed
from medr1.data.published import load_eval_data_file
from medr1.data.schema import DataError, LoadedQuestions, OnError, Question
from medr1.data.sources import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    load_jsonl,
    load_pubmedqa_pqal,
    resolve_data_dir,
)

log = logging.getLogger(__name__)

# The fit check's set (params `fit_check`): a run's own training questions, asked in option orders training
# never used. Not a benchmark on disk: preparation writes it; every table and figure shows it with FIT_LABEL.
FIT_BENCHMARK = "fit"
FIT_LABEL = "fit check: training questions, not generalization"


def benchmark_title(name: str, sep: str = " ") -> str:
    """How tables and figures name a benchmark: the fit check's set always with FIT_LABEL beside it.

    >>> benchmark_title("fit")
    'fit (fit check: training questions, not generalization)'
    """
    return f"{name}{sep}({FIT_LABEL})" if name == FIT_BENCHMARK else name


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
    if name == FIT_BENCHMARK:
        raise DataError(f"{FIT_BENCHMARK!r} is the fit check's set, a run's own training questions: preparation "
                        f"writes it (runs/<run>/data/eval/{FIT_BENCHMARK}.jsonl) when params set fit_check: true; "
                        f"evaluate a checkpoint on it with that run's params: medr1 eval -f runs/<run>/params.yaml "
                        f"--adapter ...")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if name.endswith(".json") and Path(name).expanduser().is_file():
        # A HuatuoGPT-o1-style eval file (their eval_data.json): `split` names the set in it.

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
