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
