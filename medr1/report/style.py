"""The report figures' shared look and how they are saved (PNG for the README, PDF for a report).

At the bottom of `report/`: every figure builder imports it, and it imports none of them.
"""

from __future__ import annotations

from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure

DPI = 150



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

    >>> import matplotlib.pyplot as plt; fig, ax = plt.subplots()
    >>> _ = ax.text(0.5, 0.5, "one"); _ = ax.text(0.5, 0.5, "two")
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
