"""What a training run leaves to check beside its curves: collapse episodes, the greedy validation table, and
the step whose adapter the run kept.

Why here and not in the notebook: notebook 03 and the training figure must agree on what counts as a
collapse episode (the same `collapse_spans` over the same `answer_top_share` column, mapped to the same
steps), and "which adapter did this run keep" has one answer that depends on two files and one param; each
is a function with a test rather than a comprehension in a cell. Everything is read from the run directory
through `medr1.artifacts`; nothing here imports the training code (a report must open on a laptop).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medr1.artifacts import VALIDATION_CSV, read_best, read_validation
from medr1.runs import RunDir
from medr1.task.letter_bias import collapse_spans

LAST = "last"  # `selected_step` when the run's adapter is its last step's


def collapse_episodes(metrics: pd.DataFrame) -> list[tuple[int, int]]:
    """(first step, last step) of every stretch where the collapse monitor's `answer_top_share` stayed above
    `COLLAPSE_THRESHOLD` for at least `COLLAPSE_PATIENCE` logged steps; [] when the column was not logged.

    Args:
        metrics: `medr1.artifacts.metrics_frame` output.

    >>> collapse_episodes(pd.DataFrame({"step": [2, 4, 6, 8, 10, 12], "answer_top_share": [0.9] * 5 + [0.5]}))
    [(2, 10)]
    >>> collapse_episodes(pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.2]}))
    []
    """
    if "answer_top_share" not in metrics or metrics["answer_top_share"].isna().all():
        return []
    steps = metrics["step"].to_numpy()
    return [(int(steps[a]), int(steps[b])) for a, b in collapse_spans(metrics["answer_top_share"].tolist())]


def validation_table(run_dir: str | Path) -> pd.DataFrame:
    """`train/validation.csv` as a frame, one row per validated step (step 0: the untrained policy); empty
    when the run validated nothing (`validation_every: 0`)."""
    return pd.DataFrame(read_validation(RunDir(run_dir).train_dir / VALIDATION_CSV))


def selected_step(run_dir: str | Path, select_checkpoint: str) -> int | str:
    """The step whose adapter the run kept: the best validated step under `select_checkpoint: validation`
    when one was kept (`train/best_adapter/best.json`), else "last" (the last step's adapter, which is also
    what `medr1.train.validation.adopt_best` leaves when nothing was validated).

    >>> import tempfile; selected_step(tempfile.mkdtemp(), "validation")
    'last'
    """
    best = read_best(RunDir(run_dir).train_dir)
    return int(best["step"]) if best is not None and select_checkpoint == "validation" else LAST
