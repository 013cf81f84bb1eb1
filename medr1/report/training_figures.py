"""Training figures from `train/metrics.csv` (as `medr1.artifacts.metrics_frame` reads it): rewards, reward
spread, completion length, KL and the collapse monitor. Plot functions take frames and read no files.

Raw values are drawn faint under a rolling mean, so a short demo run and a long GPU run read alike; a KL
figure for beta = 0 says "not logged" instead of drawing a flat line that reads as "the policy did not move".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from medr1.report.style import use_style
from medr1.report.training_checks import collapse_episodes
from medr1.task.letter_bias import COLLAPSE_PATIENCE, COLLAPSE_THRESHOLD


def reward_columns(metrics: pd.DataFrame) -> dict[str, str]:
    """Per-reward-function mean columns as {function name: column}: `reward/<f>` (medr1.train's
    metrics.csv), or TRL's raw `rewards/<f>/mean` / `rewards/<f>`; never the `/std` ones.

    >>> reward_columns(pd.DataFrame(columns=["reward", "reward_std", "reward/accuracy", "rewards/format/std"]))
    {'accuracy': 'reward/accuracy'}
    """
    out = {}
    for col in metrics.columns:
        m = re.fullmatch(r"rewards?/(.+?)(/mean)?", str(col))
        if m and not m.group(1).endswith("/std") and m.group(1) not in out:
            out[m.group(1)] = col
    return out


# --- training curves --------------------------------------------------------------------------------


def _window(n: int) -> int:
    return max(1, min(25, n // 10))


def _curve(ax, x: pd.Series, y: pd.Series, label: str, color, window: int) -> None:
    """Raw values faint, rolling mean solid; with too few steps for a mean, the raw line carries the label."""
    if window > 1:
        ax.plot(x, y, color=color, alpha=0.25, linewidth=1, label="_nolegend_")
        ax.plot(x, y.rolling(window, min_periods=1).mean(), color=color, linewidth=2, label=label)
    else:
        ax.plot(x, y, color=color, linewidth=2, marker="o", markersize=4, label=label)


def _require(metrics: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in metrics.columns or metrics[c].isna().all()]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing} in metrics.csv (columns: {list(metrics.columns)})")


def plot_training_curves(metrics: pd.DataFrame) -> Figure:
    """Mean reward (total and per reward function) and its within-group std over training steps.

    A third panel shows the share of groups whose rewards were all equal (`frac_reward_zero_std`) when
    logged: such groups have zero advantage and teach GRPO nothing.

    Args:
        metrics: `medr1.artifacts.metrics_frame` output (needs `step`, `reward`).

    Returns:
        The figure (2 or 3 panels sharing the step axis).

    >>> fig = plot_training_curves(pd.DataFrame({"step": [1, 2], "reward": [0.1, 0.3], "reward_std": [0.2, 0.1]}))
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['reward (mean per completion)', 'reward std within group']
    """
    use_style()
    _require(metrics, ["step", "reward"], "plot_training_curves")
    panels = ["reward", "reward_std"] + (["frac_reward_zero_std"] if "frac_reward_zero_std" in metrics else [])
    has_top = "answer_top_share" in metrics and metrics["answer_top_share"].notna().any()
    panels += ["answer_top_share"] if has_top else []
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    x, w = metrics["step"], _window(len(metrics))
    colors = sns.color_palette("colorblind")

    _curve(axes[0], x, metrics["reward"], "total (weighted sum)", "black", w)
    for i, (name, col) in enumerate(reward_columns(metrics).items()):
        _curve(axes[0], x, metrics[col], name, colors[i % len(colors)], w)
    axes[0].set_ylabel("reward (mean per completion)")
    axes[0].legend(loc="best", fontsize="small")
    title = "GRPO training rewards" + (f" (solid: rolling mean over {w} steps)" if w > 1 else "")
    axes[0].set_title(title)

    if "reward_std" in metrics and metrics["reward_std"].notna().any():
        _curve(axes[1], x, metrics["reward_std"], "reward std", colors[0], w)
    else:
        axes[1].text(0.5, 0.5, "reward_std not logged", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set_ylabel("reward std within group")
    if "frac_reward_zero_std" in panels:
        ax = axes[panels.index("frac_reward_zero_std")]
        _curve(ax, x, 100 * metrics["frac_reward_zero_std"], "zero-std groups", colors[3], w)
        ax.set_ylabel("groups with zero\nreward std (%)")
        ax.set_ylim(-2, 102)
    if has_top:
        _mark_collapse(axes, panels, metrics, colors)
    axes[-1].set_xlabel("training step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def _mark_collapse(axes, panels: list[str], metrics: pd.DataFrame, colors) -> None:
    """The collapse monitor's panel (share of the step's answers that are its most frequent letter) and a
    red band on every panel where it stayed above the threshold for the monitor's patience."""

    ax = axes[panels.index("answer_top_share")]
    _curve(ax, metrics["step"], 100 * metrics["answer_top_share"], "most frequent letter", colors[4], 1)
    ax.axhline(100 * COLLAPSE_THRESHOLD, color="0.4", linestyle="--", linewidth=1, label="collapse threshold")
    ax.set_ylabel("answers that are the\nstep's top letter (%)")
    ax.set_ylim(-2, 102)
    spans = collapse_episodes(metrics)
    for start, end in spans:
        for a in axes:
            a.axvspan(start - 0.5, end + 0.5, color="red", alpha=0.12, linewidth=0)
    ax.legend(loc="best", fontsize="small", title=(f"red: > {100 * COLLAPSE_THRESHOLD:.0f}% for "
                                                   f">= {COLLAPSE_PATIENCE} steps (collapse)") if spans else None)


def plot_completion_length(metrics: pd.DataFrame) -> Figure:
    """Mean completion length over steps, and the share of completions cut at max_completion_length.

    Args:
        metrics: `medr1.artifacts.metrics_frame` output (needs `step`, `completion_length`; `clipped_ratio` optional).

    Returns:
        The figure (1 panel, or 2 when `clipped_ratio` was logged).

    >>> fig = plot_completion_length(pd.DataFrame({"step": [1, 2], "completion_length": [40, 60]}))
    >>> fig.axes[0].get_ylabel()
    'completion length (tokens)'
    """
    use_style()
    _require(metrics, ["step", "completion_length"], "plot_completion_length")
    has_clip = "clipped_ratio" in metrics and metrics["clipped_ratio"].notna().any()
    fig, axes = plt.subplots(1 + has_clip, 1, figsize=(9, 3.2 * (1 + has_clip)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    x, w = metrics["step"], _window(len(metrics))
    colors = sns.color_palette("colorblind")
    _curve(axes[0], x, metrics["completion_length"], "mean length", colors[0], w)
    axes[0].set_ylabel("completion length (tokens)")
    axes[0].set_title("Completion length" + (f" (solid: rolling mean over {w} steps)" if w > 1 else ""))
    if has_clip:
        _curve(axes[1], x, 100 * metrics["clipped_ratio"], "clipped", colors[1], w)
        axes[1].set_ylabel("cut at max length (%)")
        axes[1].set_ylim(-2, 102)
    axes[-1].set_xlabel("training step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def has_kl(metrics: pd.DataFrame) -> bool:
    """True when KL was logged with any non-zero value (TRL omits or zeroes it when beta = 0)."""
    return "kl" in metrics and bool((metrics["kl"].fillna(0) != 0).any())


def plot_kl(metrics: pd.DataFrame, beta: float | None = None) -> Figure:
    """KL divergence of the policy from the reference model over steps.

    With beta = 0 there is no reference model and TRL logs no KL; the figure then says so instead of
    drawing a flat line that would read as "the policy did not move".

    Args:
        metrics: `medr1.artifacts.metrics_frame` output.
        beta: the run's KL coefficient, shown in the title when known.

    Returns:
        The figure (one panel).

    >>> fig = plot_kl(pd.DataFrame({"step": [1, 2]}), beta=0.0)
    >>> "not logged" in fig.axes[0].texts[0].get_text()
    True
    """
    use_style()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    beta_txt = "" if beta is None else f" (beta = {beta:g})"
    ax.set_title(f"KL to the reference model{beta_txt}")
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("KL (nats per token)")
    if has_kl(metrics):
        _curve(ax, metrics["step"], metrics["kl"], "KL", sns.color_palette("colorblind")[2], _window(len(metrics)))
    else:
        why = "beta = 0: no reference model, so no KL term" if not beta else "the run logged no KL values"
        ax.text(0.5, 0.5, f"KL not logged\n({why})", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig
