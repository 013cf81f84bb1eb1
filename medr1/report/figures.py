"""Report figures, rebuilt from the files a run leaves behind: nothing here trains, generates or imports torch.

A figure that can only be made inside a training process cannot be checked by a reviewer; one made from
`runs/<name>/train/metrics.csv`, `eval/<label>/predictions.jsonl` and `results.csv` can be rebuilt by
anyone holding the run directory, months later, on a laptop. So `make_figure(run_dir, name)` draws one
figure from the run's files (read through `medr1.artifacts`, the one reader of each), saves it, and says
why when the run lacks what it needs; `make_all_figures` makes every one. The plots themselves live in
`medr1.report.training_figures` and `medr1.report.eval_figures` and take frames; the two image figures of
a vision run (`medr1.report.image_figures`) take questions and prediction rows, and are skipped for text runs.

One style (`use_style`) for every figure: seaborn "whitegrid", a "talk"-sized context and the colour-blind
palette, set by every plot function so that a figure looks the same from the notebook, the CLI or a test.
Axis labels carry units ("accuracy (%)", "completion length (tokens)").
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from medr1.artifacts import ArtifactError, eval_predictions, metrics_frame, predictions_frame, read_run_params
from medr1.paths import FIGURES_DIR, PARAMS_DIR, resolve_repo_path
from medr1.prepare import read_pool
from medr1.report.eval_figures import (
    chance_levels,
    normalise_results,
    plot_accuracy,
    plot_extraction_rules,
    plot_letter_recall,
    plot_paired,
)
from medr1.report.image_figures import plot_image_predictions, plot_training_images, shown_predictions
from medr1.report.results import paired_comparison, results_table
from medr1.report.style import save_figure
from medr1.report.training_figures import has_kl, plot_completion_length, plot_kl, plot_training_curves
from medr1.runs import RunDir

logger = logging.getLogger(__name__)

REFERENCE_FILE = PARAMS_DIR / "reference_results.yaml"
MEASURED = "measured here"


# --- style and saving ------------------------------------------------------------------------------


def copy_to_report(paths: Iterable[str | Path], figures_dir: str | Path = FIGURES_DIR) -> list[Path]:
    """Copy the PNGs among `paths` into the committed report folder (`figures/` at the repo root).

    Args:
        paths: figure files, e.g. the return value of `make_all_figures`; non-PNG files are ignored.
        figures_dir: destination folder.

    Returns:
        The written copies.

    >>> copy_to_report([], "/tmp/none")
    []
    """
    pngs = [Path(p) for p in paths if Path(p).suffix.lower() == ".png"]
    if not pngs:
        return []
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, figures_dir / p.name)) for p in pngs]


def load_results(run_dir: str | Path, reference: str | Path | None = REFERENCE_FILE) -> pd.DataFrame:
    """Accuracy rows for `plot_accuracy`: the run's `results.csv`, else the table `medr1.report.results` would write
    from its summaries; the published reference rows are added when the table does not carry them.

    Columns: model, benchmark, accuracy (fraction), ci_low, ci_high (fractions, NaN when unknown),
    source ("measured here" / "reported by ..."), scorer, n.
    """

    run_dir = Path(run_dir)
    csv = run_dir / "results.csv"
    reference = resolve_repo_path(reference) if reference is not None else None
    reference = reference if reference is not None and reference.is_file() else None
    if csv.is_file():
        df = pd.read_csv(csv)
    elif (run_dir / "eval").is_dir():
        df = results_table(run_dir, None)
    else:
        df = pd.DataFrame()
    if df.empty:
        return df
    if "source" not in df.columns:
        df["source"] = MEASURED
    provenance = df["provenance"] if "provenance" in df.columns else df["source"]
    if reference is not None and not (~provenance.fillna(MEASURED).astype(str).str.startswith("measured")).any():
        df = pd.concat([df, results_table([], reference)], ignore_index=True)
    return normalise_results(df)


# --- one call per figure --------------------------------------------------------------------------


class FigureSkipped(ValueError):
    """The run lacks the artifact a figure is drawn from (the message says which)."""


def _metrics(run_dir: Path) -> pd.DataFrame:
    path = RunDir(run_dir).metrics_csv
    if not path.is_file():
        raise FigureSkipped(f"{path} not found (no training run)")
    metrics = metrics_frame(path)
    if metrics.empty:
        raise FigureSkipped(f"{path} has no rows yet")
    return metrics


def _predictions(run_dir: Path, *, required: bool = True) -> dict[str, pd.DataFrame]:
    preds = {label: predictions_frame(rows) for label, rows in eval_predictions(run_dir).items() if rows}
    if required and not preds:
        raise FigureSkipped(f"no {RunDir(run_dir).eval_dir}/<label>/predictions.jsonl found")
    return preds


def _training_curves(run_dir: Path, reference, beta) -> Figure:

    return plot_training_curves(_metrics(run_dir))


def _completion_length(run_dir: Path, reference, beta) -> Figure:

    return plot_completion_length(_metrics(run_dir))


def _kl(run_dir: Path, reference, beta) -> Figure:

    metrics = _metrics(run_dir)
    if not has_kl(metrics):
        raise FigureSkipped(f"no KL logged (beta = {beta})")
    return plot_kl(metrics, beta)


def _accuracy(run_dir: Path, reference, beta) -> Figure:

    results = load_results(run_dir, reference)
    if results.empty:
        raise FigureSkipped(f"neither {run_dir / 'results.csv'} nor eval/*/summary.json found")
    return plot_accuracy(results, chance_levels(results, _predictions(run_dir, required=False)))


def _paired(run_dir: Path, reference, beta) -> Figure:

    labels = sorted(_predictions(run_dir, required=False))
    if not {"base", "trained"} <= set(labels):
        raise FigureSkipped(f"needs eval/base and eval/trained predictions, found {labels}")
    return plot_paired(paired_comparison(run_dir, "base", "trained"))


def _extraction_rules(run_dir: Path, reference, beta) -> Figure:

    return plot_extraction_rules(_predictions(run_dir))


def _letter_recall(run_dir: Path, reference, beta) -> Figure:

    return plot_letter_recall(_predictions(run_dir))


def _images_present(paths: list[str]) -> None:
    if missing := [p for p in paths if not Path(p).is_file()]:
        raise FigureSkipped(f"image(s) not found (was the data moved?): {missing}")


def _training_images(run_dir: Path, reference, beta) -> Figure:

    questions = [q for q in read_pool(run_dir) if q.images]
    if not questions:
        raise FigureSkipped(f"no training question with an image in {run_dir / 'data' / 'train_pool.jsonl'}")
    _images_present([q.images[0] for q in questions[:4]])
    return plot_training_images(questions)


def _image_predictions(run_dir: Path, reference, beta) -> Figure:

    preds = {label: [r for r in rows if r.get("images")] for label, rows in eval_predictions(run_dir).items()}
    preds = {label: rows for label, rows in preds.items() if rows}
    if not preds:
        raise FigureSkipped(f"no prediction with an image in {RunDir(run_dir).eval_dir}/<label>/predictions.jsonl")
    label = "trained" if "trained" in preds else sorted(preds)[0]
    _images_present([r["images"][0] for r in shown_predictions(preds[label])])
    return plot_image_predictions(preds[label], label)


# name -> builder(run_dir, reference file, beta), in the order of the report.
_BUILDERS = {"training_curves": _training_curves, "completion_length": _completion_length, "kl": _kl,
             "accuracy": _accuracy, "extraction_rules": _extraction_rules, "letter_recall": _letter_recall,
             "paired_base_vs_trained": _paired,
             # vision runs only (skipped, saying so, for text runs)
             "training_images": _training_images, "image_predictions": _image_predictions}
FIGURE_NAMES = tuple(_BUILDERS)


def make_figure(run_dir: str | Path, name: str, out_dir: str | Path | None = None,
                reference: str | Path | None = None) -> Figure | None:
    """Draw one figure of the report from the run's artifacts and save it (PNG and PDF).

    Args:
        run_dir: `runs/<name>/`.
        name: one of `FIGURE_NAMES`.
        out_dir: where to write; default `run_dir/figures/`.
        reference: published numbers for the accuracy figure; default the run's `reference_results`
            param, else params/reference_results.yaml; used only when results.csv lacks reported rows.

    Returns:
        The figure, or None when the run lacks its artifacts (logged as a warning saying which).

    >>> import tempfile; make_figure(tempfile.mkdtemp(), "accuracy") is None
    True
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown figure {name!r}; choose from {list(FIGURE_NAMES)}")
    run_dir = Path(run_dir)
    run_params = read_run_params(run_dir)
    if reference is None:
        reference = resolve_repo_path(run_params.get("reference_results") or REFERENCE_FILE)
    try:
        fig = _BUILDERS[name](run_dir, reference, run_params.get("beta"))
    except (ValueError, KeyError, ArtifactError) as e:  # FigureSkipped, or an artifact lacking what it needs
        logger.warning("skipped figure %r: %s", name, e)
        return None
    out_dir = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures_dir
    save_figure(fig, out_dir, name)
    logger.info("wrote figure %s", out_dir / name)
    return fig


def make_all_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                     reference: str | Path | None = None) -> list[Path]:
    """`make_figure` for every name in `FIGURE_NAMES`; returns the written files (a PNG and a PDF each).

    >>> import tempfile; make_all_figures(tempfile.mkdtemp())
    []
    """
    out_dir = Path(out_dir) if out_dir is not None else RunDir(run_dir).figures_dir
    written: list[Path] = []
    for name in FIGURE_NAMES:
        fig = make_figure(run_dir, name, out_dir, reference)
        if fig is not None:
            written += [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
            plt.close(fig)
    return written
