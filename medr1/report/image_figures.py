"""Image figures of a vision run: a few training questions with their images, and a few evaluated questions
with their images beside the gold and the model's answer. Plot functions take questions / prediction rows
and open only the images they name.

Why a figure and not a loop in the notebook: a reviewer of a vision run wants to see what the model was
shown, and that the image a prediction row names is the one its question is about (a swapped path scores at
chance and looks like any weak model). Drawn from `data/train_pool.jsonl` and `eval/<label>/predictions.jsonl`,
the check can be redone from the run directory alone, like every other figure of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from medr1.report.style import use_style

MAX_PANELS = 4


def _grid(panels: Sequence[tuple[str, str]], title: str) -> Figure:
    """One row of images, each titled; `panels` is [(image path, panel title)], at least one."""
    if not panels:
        raise ValueError(f"{title}: no question with an image")
    use_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.8), squeeze=False)
    for ax, (path, text) in zip(axes[0], panels, strict=True):
        with Image.open(path) as image:
            ax.imshow(image.convert("RGB"))
        ax.set_title(text, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_training_images(questions: Iterable[Any], n: int = MAX_PANELS) -> Figure:
    """The first `n` training questions that carry an image: the image, its modality, the gold letter and text.

    Args:
        questions: `medr1.data.Question`s (the prepared pool, `medr1.prepare.read_pool`).
        n: at most this many panels.

    Raises:
        ValueError: no question carries an image (a text-only run).
    """
    shown = [q for q in questions if q.images][:n]
    return _grid([(q.images[0], f"{q.meta.get('modality', '?')}: gold {q.answer}\n({q.options[q.answer]})")
                  for q in shown], "Training questions and their images")


def shown_predictions(rows: Iterable[dict], n: int = MAX_PANELS) -> list[dict]:
    """The first `n` questions' rows among those naming an image, one row per question (its first rotation:
    the other rotations show the same image).

    >>> [r["id"] for r in shown_predictions([{"id": "1", "images": ["a"]}, {"id": "1", "images": ["a"]},
    ...                                      {"id": "2"}, {"id": "3", "images": ["b"]}])]
    ['1', '3']
    """
    seen, shown = set(), []
    for row in rows:
        key = (row.get("benchmark"), row.get("id"))
        if row.get("images") and key not in seen and len(shown) < n:
            seen.add(key)
            shown.append(row)
    return shown


def plot_image_predictions(rows: Iterable[dict], label: str, n: int = MAX_PANELS) -> Figure:
    """The first `n` questions whose prediction rows name an image (`shown_predictions`): the image, its
    modality, gold and answered letter ("unparsed" when no letter was extracted: wrong under `strict`).

    Args:
        rows: prediction rows of one model (`medr1.artifacts.read_predictions`).
        label: the model's eval label, for the title.
        n: at most this many panels.

    Raises:
        ValueError: no row names an image (a text-only evaluation).
    """
    shown = shown_predictions(rows, n)
    return _grid([(r["images"][0], f"{r.get('modality', '?')}: gold {r['gold']},\nanswered {r['extracted'] or 'unparsed'}")
                  for r in shown], f"Evaluated questions and the answers of {label!r}")
