"""Evaluation figures: accuracy beside published numbers, extraction rules, per-letter recall, paired
outcomes. Plot functions take frames (`medr1.artifacts.predictions_frame`, `medr1.report.figures.load_results`,
`medr1.report.results.paired_table`) and read no files.

Published numbers are drawn lighter and hatched and labelled "reported by" in the legend, beside ours
("measured here"): the reported rows were scored by other people's scorers on their own test files.
Paired figures draw `medr1.report.results.paired_table`, the same pairing and McNemar test as the results table.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medr1.data import FIT_BENCHMARK, FIT_LABEL, benchmark_title
from medr1.evaluation.stats import wilson_ci
from medr1.report.style import use_style

logger = logging.getLogger(__name__)

MEASURED = "measured here"
REPORTED = "reported by"
# Extraction rules (medr1.task.answers.RULES) that return no letter; drawn in greys as "unparsed".
UNPARSED_RULES = ("none", "ambiguous", "truncated", "not_an_option", "unparsed", "dropped_empty")
# Options per question where predictions do not say (chance = 1 / options); mmlu-pro varies (up to 10).
KNOWN_OPTIONS = {"medqa": 4, "medqa_5options": 5, "medmcqa": 4, "pubmedqa": 3, "pubmedqa-pqal": 3,
                 "mmlu": 4, "mmlu-pro": 10, "gpqa": 4}
# Names the published tables use for our benchmarks ("MMLU-Pro med" is our mmlu-pro medical subset).
_BENCH_ALIASES = {"mmlu-pro-med": "mmlu-pro", "mmlupro": "mmlu-pro", "gpqa-med": "gpqa",
                  "medqa-usmle": "medqa", "pubmedqa-pqa-l": "pubmedqa"}


def _bench_key(name: Any) -> str:
    """Match names across our files and published tables ("MMLU-Pro med" -> "mmlu-pro")."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    key = "medqa_5options" if key == "medqa-5options" else key
    return _BENCH_ALIASES.get(key, key)


def _as_fraction(x: Any) -> float:
    """Accuracies written in percent (71.5) become fractions (0.715); fractions stay as they are."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v / 100.0 if v > 1.0 else v


def normalise_results(df: pd.DataFrame) -> pd.DataFrame:
    """Fractions everywhere, CI columns present (Wilson from n where a measured row lacks them)."""
    df = df.copy()
    if "provenance" in df.columns:  # results.csv: `provenance` says measured/reported, `source` cites
        df["source"] = df["provenance"].fillna(df.get("source", ""))
    df["source"] = df["source"].fillna(MEASURED).astype(str)
    for col in ("accuracy", "ci_low", "ci_high"):
        df[col] = df[col].map(_as_fraction) if col in df.columns else np.nan
    for col in ("scorer", "n"):
        if col not in df.columns:
            df[col] = np.nan
    measured = df["source"].str.lower().str.startswith("measured")
    for i in df.index[measured & df["ci_low"].isna() & df["n"].notna() & df["accuracy"].notna()]:
        n = int(df.at[i, "n"])
        if n > 0:
            ci = wilson_ci(round(df.at[i, "accuracy"] * n), n)
            df.at[i, "ci_low"], df.at[i, "ci_high"] = ci.low, ci.high
    return df


def chance_levels(results: pd.DataFrame, predictions: Mapping[str, pd.DataFrame] | None = None) -> dict[str, float]:
    """Chance accuracy (uniform guessing) per benchmark: the mean over questions of 1 / number of options
    when predictions carry the options, else `KNOWN_OPTIONS`.

    >>> chance_levels(pd.DataFrame({"benchmark": ["medqa", "pubmedqa"]}))
    {'medqa': 0.25, 'pubmedqa': 0.3333333333333333}
    """
    chance = {}
    for df in (predictions or {}).values():
        if "n_options" in df.columns and df["n_options"].notna().any():
            for bench, sub in df.dropna(subset=["n_options"]).groupby("benchmark"):
                chance.setdefault(_bench_key(bench), float((1.0 / sub["n_options"]).mean()))
    for bench in results.get("benchmark", pd.Series(dtype=str)).unique():
        key = _bench_key(bench)
        if key not in chance and key in KNOWN_OPTIONS:
            chance[key] = 1.0 / KNOWN_OPTIONS[key]
    return chance


def plot_letter_recall(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """Per benchmark, the recall of each gold letter (how often a question whose answer is L is answered
    L), one bar per model. Flat bars: no letter preference; one tall bar: the model answers that letter
    (Zheng et al., ICLR 2024, measure letter bias as the spread of these recalls).

    Args:
        predictions: {label: `medr1.artifacts.predictions_frame`}, e.g. base and trained.

    >>> d = pd.DataFrame({"benchmark": ["m"] * 4, "id": list("1234"), "gold": list("ABAB"),
    ...                   "extracted": list("AAAA"), "correct": [True, False, True, False]})
    >>> len(plot_letter_recall({"base": d}).axes)
    1
    """
    use_style()
    frames = []
    for label, df in predictions.items():
        if df.empty or "gold" not in df:
            continue
        hit = df["extracted"].astype(object).eq(df["gold"])
        frames.append(df.assign(label=label, hit=hit).groupby(["benchmark", "gold", "label"], as_index=False)
                      .agg(recall=("hit", "mean"), n=("hit", "size")))
    if not frames:
        raise ValueError("no predictions with gold letters to compute per-letter recall from")
    table = pd.concat(frames, ignore_index=True)
    table["recall"] *= 100
    benches = list(dict.fromkeys(table["benchmark"]))
    fig, axes = plt.subplots(1, len(benches), figsize=(4.2 * len(benches) + 1.4, 3.6), squeeze=False,
                             sharey=True)  # + the legend's column
    for ax, bench in zip(axes[0], benches, strict=True):
        sub = table[table["benchmark"] == bench]
        sns.barplot(sub, x="gold", y="recall", hue="label", ax=ax, palette="colorblind",
                    order=sorted(sub["gold"].unique()))
        # Wrapped to the panel's width: a one-panel figure (the fit check's) has room for ~30 characters.
        ax.set_title("\n".join(textwrap.fill(line, 30) for line in benchmark_title(bench, "\n").split("\n")))
        ax.set_xlabel("gold letter")
        ax.set_ylabel("recall of the letter (%)")
        ax.set_ylim(0, 100)
        if ax is not axes[0][-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if axes[0][-1].get_legend() is not None:  # beside the panels: over them it hid the bars it names
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle("Per-letter recall: flat = no letter preference")
    fig.tight_layout()
    return fig


# --- evaluation -----------------------------------------------------------------------------------


def _measured_label(row: pd.Series, notes: list[str]) -> str:
    # The eval label ("base", "trained") is short and is what the run calls it; the model spec is long.
    name = row.get("label") if isinstance(row.get("label"), str) and row.get("label") else row["model"]
    scorer = row.get("scorer")
    label = f"{name} · {scorer}" if isinstance(scorer, str) and scorer else str(name)
    # results.csv says whether the row is comparable with the published bars beside it, and if not, why: a
    # sentence too long for a tick label, so the label gets its note's number and the note goes under the
    # figure (`notes`, shared by every panel).
    verdict = row.get("comparability")
    if isinstance(verdict, str) and verdict:
        if verdict not in notes:
            notes.append(verdict)
        label += f" [{notes.index(verdict) + 1}]"
    return label


def _reported_label(row: pd.Series) -> str:
    return f"{row['model']} (protocol unknown)" if row.get("protocol") == "unknown" else str(row["model"])


UNKNOWN_NOTE = ("protocol unknown: the source released a results image, no prompt, decoding, sets or scorer; "
                "its numbers are comparable with no row here")


def _notes_and_legend(fig: Figure, handles: list, notes: list[str], unknown: bool) -> None:
    """Numbered notes (wrapped to the figure's width) at the bottom, the legend above them, the panels
    above both: measured after drawing, so nothing is printed over anything at any number of notes."""
    lines = [f"[{i}] {n}" for i, n in enumerate(notes, 1)] + ([UNKNOWN_NOTE] if unknown else [])
    width = int(fig.get_figwidth() * 72 / (plt.rcParams["font.size"] * 0.8 * 0.6))  # characters at "small"
    text = "\n".join(w for line in lines for w in textwrap.wrap(line, width, subsequent_indent="    "))
    renderer = fig.canvas.get_renderer()
    bottom = 0.005
    if text:
        note = fig.text(0.01, bottom, text, ha="left", va="bottom", fontsize="small")
        bottom += note.get_window_extent(renderer).height / fig.bbox.height + 0.01
    legend = fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize="small",
                        bbox_to_anchor=(0.5, bottom))
    bottom += legend.get_window_extent(renderer).height / fig.bbox.height + 0.01
    fig.tight_layout(rect=(0, bottom, 1, 1))


def plot_accuracy(results: pd.DataFrame, chance: Mapping[str, float] | None = None,
                  include_reference: bool = True) -> Figure:
    """Accuracy per benchmark: our runs (with 95% CIs) beside published numbers, and the chance level.

    One panel per benchmark we measured. Our bars are coloured by scorer ("measured here"); published
    rows for the same benchmark are drawn light grey and hatched ("reported by"); a dashed line marks the
    accuracy of guessing uniformly among the options. Whether a measured row is comparable with the
    published ones, and why not, is a numbered note under the panels; a published row whose protocol is
    unknown says so in its label.

    Args:
        results: `load_results` output (model, benchmark, accuracy, ci_low, ci_high, source, scorer).
        chance: {benchmark: chance accuracy (fraction)}; defaults from `KNOWN_OPTIONS`.
        include_reference: draw the published rows.

    Returns:
        The figure.

    >>> r = pd.DataFrame({"model": ["base"], "benchmark": ["medqa"], "accuracy": [0.4], "ci_low": [0.3],
    ...                   "ci_high": [0.5], "source": ["measured here"], "scorer": ["strict"]})
    >>> len(plot_accuracy(r).axes[0].patches)
    1
    """
    use_style()
    df = normalise_results(results)
    df["key"] = df["benchmark"].map(_bench_key)
    df["measured"] = df["source"].str.lower().str.startswith("measured")
    benches = list(dict.fromkeys(df.loc[df["measured"], "benchmark"])) or list(dict.fromkeys(df["benchmark"]))
    keys = [_bench_key(b) for b in benches]
    if not include_reference:
        df = df[df["measured"]]
    dropped = sorted(set(df.loc[~df["key"].isin(keys), "benchmark"]))
    if dropped:
        logger.info("plot_accuracy: no measured rows for %s; their reference rows are not drawn", dropped)
    chance = {_bench_key(k): v for k, v in (chance or chance_levels(df, None)).items()}

    scorers = [s for s in dict.fromkeys(df.loc[df["measured"], "scorer"]) if isinstance(s, str)]
    palette = dict(zip(scorers or ["-"], sns.color_palette("colorblind"), strict=False))
    sizes = [int((df["key"] == k).sum()) for k in keys]
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    height = max(2.5, 0.42 * max(sizes) + 1.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols + 1.5, height * nrows), squeeze=False)
    notes: list[str] = []
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)

    for ax, bench, key in zip(axes.flat, benches, keys, strict=False):
        sub = df[df["key"] == key]
        ours = sub[sub["measured"]]
        refs = sub[~sub["measured"]].sort_values("accuracy", ascending=False)
        labels = [_measured_label(r, notes) for _, r in ours.iterrows()] + [_reported_label(r) for _, r in
                                                                             refs.iterrows()]
        acc = 100 * pd.concat([ours["accuracy"], refs["accuracy"]]).to_numpy(dtype=float)
        lo = 100 * pd.concat([ours["ci_low"], refs["ci_low"]]).to_numpy(dtype=float)
        hi = 100 * pd.concat([ours["ci_high"], refs["ci_high"]]).to_numpy(dtype=float)
        y = np.arange(len(labels))
        colors = [palette.get(s, palette.get("-", "C0")) if isinstance(s, str) else next(iter(palette.values()))
                  for s in ours["scorer"]] + ["0.82"] * len(refs)
        hatches = [""] * len(ours) + ["//"] * len(refs)
        for yi, a, c, h in zip(y, acc, colors, hatches, strict=True):
            ax.barh(yi, a, color=c, hatch=h, edgecolor="0.35" if h else c, linewidth=0.6)
        err = np.vstack([acc - lo, hi - acc])
        ok = ~np.isnan(err).any(axis=0)
        if ok.any():
            ax.errorbar(acc[ok], y[ok], xerr=err[:, ok], fmt="none", ecolor="black", capsize=3, linewidth=1)
        for yi, a, h in zip(y, acc, hi, strict=True):
            # Right of the bar and its interval, even past 100: tight_layout counts these texts, so the next
            # panel moves aside instead of being printed over.
            ax.text((h if not math.isnan(h) else a) + 1.5, yi, f"{a:.1f}", va="center", fontsize="x-small")
        if key in chance:
            ax.axvline(100 * chance[key], color="0.3", linestyle="--", linewidth=1.2)
        ax.set_yticks(y, labels, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        n = ours["n"].dropna()
        ax.set_title(benchmark_title(bench, "\n") + (f" (n = {int(n.iloc[0])})" if len(n) else ""))
        ax.set_xlabel("accuracy (%)")

    handles = [Patch(color=palette[s], label=f"{MEASURED}, {s} scorer") for s in scorers] or \
        [Patch(color="C0", label=MEASURED)]
    if include_reference and (~df["measured"] & df["key"].isin(keys)).any():
        sources = sorted(set(df.loc[~df["measured"] & df["key"].isin(keys), "source"]))
        handles.append(Patch(facecolor="0.82", hatch="//", edgecolor="0.35",
                             label=sources[0] if len(sources) == 1 else f"{REPORTED} published work"))
    if any(k in chance for k in keys):
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="chance (1 / number of options)"))
    handles.append(Line2D([], [], color="black", marker="|", linestyle="", markersize=10,
                              label="95% CI (measured here)"))
    unknown = include_reference and "protocol" in df.columns and bool(
        (~df["measured"] & df["key"].isin(keys) & (df["protocol"] == "unknown")).any())
    _notes_and_legend(fig, handles, notes, unknown)
    return fig


def plot_extraction_rules(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """Share of answers per extraction rule, per evaluated model (e.g. base vs trained), unparsed in grey.

    A model that "improves" by learning the answer format shows it here before it shows in accuracy.

    Args:
        predictions: {label: `medr1.artifacts.predictions_frame`}.

    Returns:
        The figure: one stacked horizontal bar per label, segments summing to 100%.

    >>> p = pd.DataFrame({"rule": ["answer_tag", "none"], "extracted": ["A", None]})
    >>> fig = plot_extraction_rules({"base": p})
    >>> fig.axes[0].get_xlabel()
    'share of answers (%)'
    """
    use_style()
    counts = pd.DataFrame({label: df["rule"].fillna("unparsed").value_counts() for label, df in predictions.items()})
    counts = counts.fillna(0)
    shares = 100 * counts / counts.sum(axis=0)
    parsed = [r for r in counts.sum(axis=1).sort_values(ascending=False).index if r not in UNPARSED_RULES]
    unparsed = [r for r in UNPARSED_RULES if r in counts.index]
    order = parsed + unparsed
    colors = dict(zip(parsed, sns.color_palette("colorblind", max(len(parsed), 1)), strict=False))
    # Light greys so the share printed on top stays readable; the hatch marks them as unparsed in print.
    colors.update(zip(unparsed, [str(g) for g in np.linspace(0.82, 0.6, max(len(unparsed), 1))], strict=False))

    labels = list(predictions)
    fig, ax = plt.subplots(figsize=(10, 1.0 * len(labels) + 1.8))
    left = np.zeros(len(labels))
    for rule in order:
        vals = shares.loc[rule, labels].to_numpy(dtype=float)
        name = f"{rule} (unparsed)" if rule in unparsed and rule != "unparsed" else rule
        ax.barh(labels, vals, left=left, color=colors[rule], label=name,
                hatch="//" if rule in unparsed else "", edgecolor="white", linewidth=0.6)
        for i, (lft, v) in enumerate(zip(left, vals, strict=True)):
            if v >= 6:
                ax.text(lft + v / 2, i, f"{v:.0f}%", ha="center", va="center", fontsize="x-small")
        left += vals
    ax.set_yticks(range(len(labels)), [f"{lb} (n = {int(counts[lb].sum())})" for lb in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of answers (%)")
    benches = {b for df in predictions.values() if "benchmark" in df for b in df["benchmark"].unique()}
    ax.set_title("How answers were extracted" + (f" ({FIT_LABEL} included)" if FIT_BENCHMARK in benches else ""))
    ax.legend(title="extraction rule", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    return fig


def plot_paired(table: pd.DataFrame) -> Figure:
    """Base vs trained on the same questions: shares of the four paired outcomes per benchmark.

    Only the discordant cells ("only base right", "only trained right") can move accuracy; the exact
    McNemar p-value on them is written beside each bar.

    Args:
        table: `medr1.report.results.paired_table` / `paired_comparison` output (a = base, b = trained).

    Returns:
        The figure: one stacked horizontal bar per benchmark.

    >>> t = pd.DataFrame({"benchmark": ["m"], "a": ["base"], "b": ["trained"], "n": [2], "both_right": [1],
    ...                   "b10": [0], "b01": [1], "both_wrong": [0], "acc_a": [50.0], "acc_b": [100.0], "p_value": [1.0]})
    >>> len(plot_paired(t).axes[0].patches)
    4
    """
    use_style()
    table = table[table["n"] > 0]
    if table.empty:
        raise ValueError("base and trained predictions share no (benchmark, id): nothing to pair")
    a, b = table["a"].iloc[0], table["b"].iloc[0]
    cells = {"both right": "both_right", f"only {a} right": "b10", f"only {b} right": "b01", "both wrong": "both_wrong"}
    cb = sns.color_palette("colorblind")
    colors = dict(zip(cells, (cb[2], cb[3], cb[0], "0.8"), strict=True))
    # Constrained layout with the legend outside the axes: its room is kept in inches, so a one-row figure (the
    # fit check's) does not print the legend over the axis label as an offset in axes fractions did.
    fig, ax = plt.subplots(figsize=(11, 0.9 * len(table) + 2.0), layout="constrained")
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for cat, col in cells.items():
        vals = 100 * table[col].to_numpy(dtype=float) / table["n"].to_numpy(dtype=float)
        ax.barh(y, vals, left=left, color=colors[cat], label=cat, edgecolor="white", linewidth=0.6)
        for yi, lft, v, c in zip(y, left, vals, table[col], strict=True):
            if v >= 6:
                ax.text(lft + v / 2, yi, str(c), ha="center", va="center", fontsize="x-small")
        left += vals
    for yi, (_, r) in zip(y, table.iterrows(), strict=True):
        ax.annotate(f"{r['acc_a']:.1f}% → {r['acc_b']:.1f}%\nMcNemar p = {r['p_value']:.3g}",
                    xy=(1.01, yi), xycoords=("axes fraction", "data"), va="center", fontsize="x-small")
    ax.set_yticks(y, [f"{benchmark_title(bn, chr(10))} (n = {n})" for bn, n in zip(table["benchmark"], table["n"],
                                                                                      strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of paired questions (%)  ·  numbers in bars: questions")
    ax.set_title(f"{a.capitalize()} vs {b} on the same questions")
    fig.legend(loc="outside lower center", ncol=4, fontsize="small")
    return fig
