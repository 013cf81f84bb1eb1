"""Report figures, rebuilt from the files a run leaves behind: nothing here trains, generates or imports torch.

A figure that can only be made inside a training process cannot be checked by a reviewer; one made from
`runs/<name>/train/metrics.csv`, `eval/<label>/predictions.jsonl` and `results.csv` can be rebuilt by
anyone holding the run directory, months later, on a laptop. So `make_figure(run_dir, name)` draws one
figure from the run's files (read through `medr1.artifacts`, the one reader of each), saves it, and says
why when the run lacks what it needs; `make_all_figures` makes every one. The plots themselves live in
`medr1.figures_training` and `medr1.figures_eval` and take frames.

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
import seaborn as sns
from matplotlib.figure import Figure

from medr1.artifacts import ArtifactError, eval_predictions, metrics_frame, predictions_frame, read_run_params
from medr1.paths import FIGURES_DIR, PARAMS_DIR, resolve_repo_path
from medr1.runs import RunDir

logger = logging.getLogger(__name__)

DPI = 150
REFERENCE_FILE = PARAMS_DIR / "reference_results.yaml"
MEASURED = "measured here"


# --- style and saving ------------------------------------------------------------------------------


def use_style() -> None:
    """Apply the one figure style of the report (idempotent; every plot function calls it).

    >>> use_style(); import matplotlib; matplotlib.rcParams["savefig.dpi"]
    150.0
    """
    sns.set_theme(context="talk", style="whitegrid", palette="colorblind", font_scale=0.75,
                  rc={"savefig.dpi": DPI, "savefig.bbox": "tight", "figure.dpi": 100,
                      "axes.titleweight": "bold", "legend.frameon": False})


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write `fig` as `<name>.png` (150 dpi, for the report and notebooks) and `<name>.pdf` (vector).

    Args:
        fig: the figure.
        out_dir: folder to write into (created if missing).
        name: file stem, e.g. "accuracy".

    Returns:
        [png path, pdf path].

    >>> import tempfile; fig, _ = plt.subplots()
    >>> [p.name for p in save_figure(fig, tempfile.mkdtemp(), "demo")]
    ['demo.png', 'demo.pdf']
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return paths


def drawn_texts(fig: Figure) -> list:
    """Every text element `fig` draws, non-empty: figure texts and legends, and per visible axes its titles,
    axis labels, texts, legend and the tick labels of the ticks it draws (not those outside the view)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    texts = [*fig.texts, *(t for legend in fig.legends for t in [*legend.get_texts(), legend.get_title()])]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
        for axis in (ax.xaxis, ax.yaxis):
            # `_update_ticks` is the list matplotlib itself draws: ticks inside the view only.
            texts += [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2)]
    return [t for t in dict.fromkeys(texts) if isinstance(t, Text) and t.get_visible() and t.get_text().strip()]


def text_overlaps(fig: Figure, *, min_points: float = 6.0) -> list[str]:
    """What keeps `fig` from being read at its saved size: pairs of text elements whose rendered boxes
    overlap (one printed over the other), and text smaller than `min_points`. Empty when legible.

    >>> fig, ax = plt.subplots(); _ = ax.text(0.5, 0.5, "one"); _ = ax.text(0.5, 0.5, "two")
    >>> text_overlaps(fig)
    ["'one' overlaps 'two'"]
    """
    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    problems = [f"{t.get_text()!r} is {t.get_fontsize():.1f} pt" for t in texts if t.get_fontsize() < min_points]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = boxes[i], boxes[j]
            # Overlap by more than a pixel each way: glyph boxes of neighbours may touch without harm.
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1:
                problems.append(f"{texts[i].get_text()!r} overlaps {texts[j].get_text()!r}")
    return problems


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
    """Accuracy rows for `plot_accuracy`: the run's `results.csv`, else the table `medr1.results` would write
    from its summaries; the published reference rows are added when the table does not carry them.

    Columns: model, benchmark, accuracy (fraction), ci_low, ci_high (fractions, NaN when unknown),
    source ("measured here" / "reported by ..."), scorer, n.
    """
    from medr1.figures_eval import normalise_results
    from medr1.results import results_table

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
    from medr1.figures_training import plot_training_curves

    return plot_training_curves(_metrics(run_dir))


def _completion_length(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_training import plot_completion_length

    return plot_completion_length(_metrics(run_dir))


def _kl(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_training import has_kl, plot_kl

    metrics = _metrics(run_dir)
    if not has_kl(metrics):
        raise FigureSkipped(f"no KL logged (beta = {beta})")
    return plot_kl(metrics, beta)


def _accuracy(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_eval import chance_levels, plot_accuracy

    results = load_results(run_dir, reference)
    if results.empty:
        raise FigureSkipped(f"neither {run_dir / 'results.csv'} nor eval/*/summary.json found")
    return plot_accuracy(results, chance_levels(results, _predictions(run_dir, required=False)))


def _paired(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_eval import plot_paired
    from medr1.results import paired_comparison

    labels = sorted(_predictions(run_dir, required=False))
    if not {"base", "trained"} <= set(labels):
        raise FigureSkipped(f"needs eval/base and eval/trained predictions, found {labels}")
    return plot_paired(paired_comparison(run_dir, "base", "trained"))


def _extraction_rules(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_eval import plot_extraction_rules

    return plot_extraction_rules(_predictions(run_dir))


def _letter_recall(run_dir: Path, reference, beta) -> Figure:
    from medr1.figures_eval import plot_letter_recall

    return plot_letter_recall(_predictions(run_dir))


# name -> builder(run_dir, reference file, beta), in the order of the report. The plot modules import
# `use_style` from here, so they are imported where used.
_BUILDERS = {"training_curves": _training_curves, "completion_length": _completion_length, "kl": _kl,
             "accuracy": _accuracy, "extraction_rules": _extraction_rules, "letter_recall": _letter_recall,
             "paired_base_vs_trained": _paired}
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
