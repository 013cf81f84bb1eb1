"""Report figures, rebuilt from the files a run leaves behind: nothing here trains, generates or imports torch.

A figure that can only be made inside a training process cannot be checked by a reviewer; one made from
`runs/<name>/train/metrics.csv`, `eval/<label>/predictions.jsonl` and `results.csv` can be rebuilt by
anyone holding the run directory, months later, on a laptop. So this module reads files, and
`make_all_figures` makes every figure whose inputs exist and says which it skipped and why.

Why it is built this way:
- One style (`use_style`) for every figure: seaborn "whitegrid", a "talk"-sized context and the
  colour-blind palette, set by every plot function so that a figure looks the same from the notebook,
  the CLI or a test. Axis labels carry units ("accuracy (%)", "completion length (tokens)").
- Loaders are tolerant about column names (TRL has renamed its logged keys between versions:
  `completion_length` vs `completions/mean_length`, `rewards/<f>` vs `rewards/<f>/mean`) and strict about
  meaning: a reward column is only what TRL logged as one, accuracies written in percent are converted
  to fractions, and a predictions file cut mid-line by a crash loses only that line (with a warning).
- Published numbers are drawn lighter and hatched and labelled "reported by" in the legend, beside ours
  ("measured here"): the reported rows were scored by other people's scorers on their own test files.
- Paired figures pair by (benchmark, id), never by row order, and the McNemar p-value comes from
  `medr1.stats.mcnemar_exact`, the same test the results table uses.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from medr1.paths import FIGURES_DIR, PARAMS_DIR, resolve_repo_path
from medr1.stats import mcnemar_exact, wilson_ci

logger = logging.getLogger(__name__)

DPI = 150
REFERENCE_FILE = PARAMS_DIR / "reference_results.yaml"
MEASURED = "measured here"
REPORTED = "reported by"
# Extraction rules (medr1.answers.RULES) that return no letter; drawn in greys as "unparsed".
UNPARSED_RULES = ("none", "ambiguous", "truncated", "not_an_option", "unparsed", "dropped_empty")
# Options per question where predictions do not say (chance = 1 / options); mmlu-pro varies (up to 10).
KNOWN_OPTIONS = {"medqa": 4, "medqa_5options": 5, "medmcqa": 4, "pubmedqa": 3, "pubmedqa-pqal": 3,
                 "mmlu": 4, "mmlu-pro": 10, "gpqa": 4}
# Names the published tables use for our benchmarks ("MMLU-Pro med" is our mmlu-pro medical subset).
_BENCH_ALIASES = {"mmlu-pro-med": "mmlu-pro", "mmlupro": "mmlu-pro", "gpqa-med": "gpqa",
                  "medqa-usmle": "medqa", "pubmedqa-pqa-l": "pubmedqa"}
# TRL's logged names for the same quantity, newest first; the first present becomes the canonical name.
_METRIC_ALIASES = {
    "completion_length": ("completion_length", "completions/mean_length"),
    "clipped_ratio": ("clipped_ratio", "completions/clipped_ratio"),
    "reward_std": ("reward_std",),
    "kl": ("kl", "objective/kl"),
}
_PAIR_CATEGORIES = ("both right", "only base right", "only trained right", "both wrong")


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


# --- loading ---------------------------------------------------------------------------------------


def load_metrics(path: str | Path) -> pd.DataFrame:
    """`train/metrics.csv` (or a run directory holding one), with canonical column names, one row per step.

    TRL's alternative names are renamed to `completion_length`, `clipped_ratio`, `reward_std`, `kl`; rows
    are sorted by step and a step logged twice (a resume that re-logged it) keeps its last row.

    >>> import tempfile, os; d = tempfile.mkdtemp(); p = os.path.join(d, "m.csv")
    >>> _ = open(p, "w").write("step,reward,completions/mean_length\\n2,0.5,9\\n1,0.2,8\\n")
    >>> load_metrics(p)[["step", "completion_length"]].values.tolist()
    [[1, 8], [2, 9]]
    """
    path = Path(path)
    if path.is_dir():
        path = path / "train" / "metrics.csv" if (path / "train").is_dir() else path / "metrics.csv"
    df = pd.read_csv(path)
    for canonical, names in _METRIC_ALIASES.items():
        present = [n for n in names if n in df.columns]
        if canonical not in df.columns and present:
            df = df.rename(columns={present[0]: canonical})
    if "step" not in df.columns:
        df.insert(0, "step", np.arange(1, len(df) + 1))
    return df.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


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


def load_predictions(path: str | Path) -> pd.DataFrame:
    """One `predictions.jsonl` as a frame with `benchmark`, `id`, `extracted`, `rule`, `correct`, `n_options`.

    `rule` becomes "unparsed" where a row has no letter and no rule; `correct` is computed from the letter
    and the gold answer when the file does not carry it; a last line cut by a crash is skipped.

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "p.jsonl")
    >>> _ = open(p, "w").write('{"id": 1, "benchmark": "b", "extracted": "A", "gold": "A", "options": {"A": 1, "B": 2}}\\n{"id"')
    >>> load_predictions(p)[["extracted", "correct", "n_options"]].values.tolist()
    [['A', True, 2]]
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s, line %d: not valid JSON (a run cut mid-write?); skipped", path, i)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["benchmark", "id", "extracted", "rule", "gold", "correct", "n_options"])
    for alias in ("letter", "pred", "prediction"):
        if "extracted" not in df.columns and alias in df.columns:
            df = df.rename(columns={alias: "extracted"})
    if "extracted" not in df.columns:
        df["extracted"] = None
    df["extracted"] = df["extracted"].astype(object).where(df["extracted"].notna(), None)
    if "rule" not in df.columns:
        df["rule"] = None
    no_rule = df["rule"].isna() | (df["rule"].astype(str) == "")
    df.loc[no_rule & df["extracted"].isna(), "rule"] = "unparsed"
    df.loc[no_rule & df["extracted"].notna(), "rule"] = "unknown"
    if "correct" not in df.columns:
        df["correct"] = [e is not None and str(e) == str(g) for e, g in zip(df["extracted"], df.get("gold"), strict=True)]
    df["correct"] = df["correct"].fillna(False).astype(bool)
    if "options" in df.columns:
        df["n_options"] = [len(o) if isinstance(o, Mapping | list) else np.nan for o in df["options"]]
    elif "n_options" not in df.columns:
        df["n_options"] = np.nan
    df["id"] = df["id"].astype(str)
    df["benchmark"] = df["benchmark"].astype(str)
    df["shift"] = df["shift"].fillna(0).astype(int) if "shift" in df.columns else 0
    return df


def load_all_predictions(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """{label: predictions} for every `eval/<label>/predictions.jsonl` of a run (labels sorted, base first)."""
    eval_dir = Path(run_dir) / "eval"
    files = sorted(eval_dir.glob("*/predictions.jsonl")) if eval_dir.is_dir() else []
    out = {p.parent.name: load_predictions(p) for p in files}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "base", kv[0] != "trained", kv[0])))


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


def _flatten_summary(node: Any, label: str, path: tuple[str, ...] = ()) -> list[dict]:
    """Every dict holding an `accuracy` inside summary.json, with benchmark and scorer from keys or parents."""
    rows = []
    if isinstance(node, Mapping):
        if "accuracy" in node and not isinstance(node["accuracy"], Mapping | list):
            context = [p for p in path if p not in ("benchmarks", "scores", "scorers", "summary", "results")]
            scorers = [p for p in context if p in ("strict", "huatuo", "majority", "majority_vote")]
            others = [p for p in context if p not in scorers]
            row = {"model": label, "source": MEASURED,
                   "benchmark": node.get("benchmark", others[-1] if others else "?"),
                   "scorer": node.get("scorer", scorers[-1] if scorers else None)}
            row.update({k: v for k, v in node.items() if not isinstance(v, Mapping | list) and k not in row})
            ci = node.get("ci") or node.get("ci95")
            if isinstance(ci, list) and len(ci) == 2:
                row["ci_low"], row["ci_high"] = ci
            rows.append(row)
            return rows
        for k, v in node.items():
            rows += _flatten_summary(v, label, (*path, str(k)))
    elif isinstance(node, list):
        for v in node:
            rows += _flatten_summary(v, label, path)
    return rows


def load_summaries(run_dir: str | Path) -> pd.DataFrame:
    """Accuracy rows (model = eval label) from every `eval/<label>/summary.json` of a run.

    Used when `results.csv` is not there yet. medr1.evaluate writes {"scores": {scorer: {benchmark: {n,
    accuracy, ci_low, ci_high, ...}}}, ...}; a bare list of per-benchmark dicts (`ScoreResult.summary()`)
    is read too, as long as each leaf carries `accuracy`.
    """
    rows = []
    for path in sorted((Path(run_dir) / "eval").glob("*/summary.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            # medr1.evaluate nests the accuracies under "scores" ({scorer: {benchmark: {...}}}) beside
            # settings and generation statistics, which must not be searched for accuracies.
            data = data["scores"] if isinstance(data, Mapping) and "scores" in data else data
            rows += _flatten_summary(data, path.parent.name)
        except json.JSONDecodeError as e:
            logger.warning("%s is not valid JSON (%s); skipped", path, e)
    return pd.DataFrame(rows)


_REF_META_KEYS = ("model", "name", "source", "citation", "reported_by", "notes", "note", "url", "n", "scorer",
                  "params", "size", "year", "ci_low", "ci_high")
_REF_CONTAINERS = ("models", "rows", "results", "reference", "accuracy", "scores", "benchmarks")


def load_reference(path: str | Path = REFERENCE_FILE) -> pd.DataFrame:
    """Published accuracies (params/reference_results.yaml) as rows with source "reported by ...".

    Accepts a list of {model, benchmark, accuracy} rows, or per-model mappings {benchmark: accuracy},
    at the top level or under a `models` / `rows` / `results` key; a `source` (or `citation`) key applies
    to everything below it. Percent becomes fraction.

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "r.yaml")
    >>> _ = open(p, "w").write("source: Med-R1 README\\nmodels:\\n  Qwen2.5-7B: {MedQA: 57.0}\\n")
    >>> load_reference(p)[["model", "benchmark", "accuracy", "source"]].values.tolist()
    [['Qwen2.5-7B', 'MedQA', 0.57, 'reported by Med-R1 README']]
    """
    rows: list[dict] = []

    def source_of(node: Mapping, inherited: str | None) -> str | None:
        s = node.get("source") or node.get("reported_by") or node.get("citation")
        return str(s) if isinstance(s, str | int | float) and s != "" else inherited

    def walk(node: Any, model: str | None, source: str | None) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, model, source)
            return
        if not isinstance(node, Mapping):
            return
        name = node.get("model") or node.get("name") or model
        source = source_of(node, source)
        if "benchmark" in node and "accuracy" in node:
            rows.append({"model": name, "benchmark": node["benchmark"], "accuracy": node["accuracy"],
                         "source": source, **{k: node[k] for k in ("ci_low", "ci_high", "n", "scorer") if k in node}})
            return
        for k, v in node.items():
            if k in _REF_META_KEYS:
                continue
            if isinstance(v, int | float) and not isinstance(v, bool) and name is not None:
                rows.append({"model": name, "benchmark": k, "accuracy": v, "source": source})
            elif isinstance(v, Mapping | list):
                walk(v, name if (name is not None or k in _REF_CONTAINERS) else str(k), source)

    walk(yaml.safe_load(Path(path).read_text(encoding="utf-8")), None, None)
    df = pd.DataFrame(rows, columns=["model", "benchmark", "accuracy", "source"] + sorted(
        {k for r in rows for k in r} - {"model", "benchmark", "accuracy", "source"}))
    df["accuracy"] = df["accuracy"].map(_as_fraction)
    df["source"] = [s if str(s).lower().startswith(REPORTED) else f"{REPORTED} {s or 'published work'}"
                    for s in df["source"]]
    return df


def load_results(run_dir: str | Path, reference: str | Path | None = REFERENCE_FILE) -> pd.DataFrame:
    """Accuracy rows for `plot_accuracy`: `results.csv` if the run has one, else its summaries, plus the
    published reference rows when `results.csv` does not already carry them.

    Columns: model, benchmark, accuracy (fraction), ci_low, ci_high (fractions, NaN when unknown),
    source ("measured here" / "reported by ..."), scorer, n.
    """
    run_dir = Path(run_dir)
    csv = run_dir / "results.csv"
    df = pd.read_csv(csv) if csv.is_file() else load_summaries(run_dir)
    if df.empty:
        return df
    df = df.copy()
    if "source" not in df.columns:
        df["source"] = MEASURED
    df["source"] = df["source"].fillna(MEASURED).astype(str)
    has_reported = (~df["source"].str.lower().str.startswith("measured")).any()
    if not has_reported and reference is not None and resolve_repo_path(reference).is_file():
        df = pd.concat([df, load_reference(resolve_repo_path(reference))], ignore_index=True)
    return normalise_results(df)


def normalise_results(df: pd.DataFrame) -> pd.DataFrame:
    """Fractions everywhere, CI columns present (Wilson from n where a measured row lacks them)."""
    df = df.copy()
    if "provenance" in df.columns:  # results.csv: `provenance` says measured/reported, `source` cites
        df["source"] = df["provenance"].fillna(df.get("source", ""))
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
        metrics: `load_metrics` output (needs `step`, `reward`).

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
    from medr1.letter_bias import COLLAPSE_PATIENCE, COLLAPSE_THRESHOLD, collapse_spans

    ax = axes[panels.index("answer_top_share")]
    _curve(ax, metrics["step"], 100 * metrics["answer_top_share"], "most frequent letter", colors[4], 1)
    ax.axhline(100 * COLLAPSE_THRESHOLD, color="0.4", linestyle="--", linewidth=1, label="collapse threshold")
    ax.set_ylabel("answers that are the\nstep's top letter (%)")
    ax.set_ylim(-2, 102)
    steps = metrics["step"].to_numpy()
    spans = collapse_spans(metrics["answer_top_share"].tolist())
    for start, end in spans:
        for a in axes:
            a.axvspan(steps[start] - 0.5, steps[end] + 0.5, color="red", alpha=0.12, linewidth=0)
    ax.legend(loc="best", fontsize="small", title=(f"red: > {100 * COLLAPSE_THRESHOLD:.0f}% for "
                                                   f">= {COLLAPSE_PATIENCE} steps (collapse)") if spans else None)


def plot_letter_recall(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """Per benchmark, the recall of each gold letter (how often a question whose answer is L is answered
    L), one bar per model. Flat bars: no letter preference; one tall bar: the model answers that letter
    (Zheng et al., ICLR 2024, measure letter bias as the spread of these recalls).

    Args:
        predictions: {label: `load_predictions` frame}, e.g. base and trained.

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
    fig, axes = plt.subplots(1, len(benches), figsize=(4.2 * len(benches), 3.6), squeeze=False, sharey=True)
    for ax, bench in zip(axes[0], benches, strict=True):
        sub = table[table["benchmark"] == bench]
        sns.barplot(sub, x="gold", y="recall", hue="label", ax=ax, palette="colorblind",
                    order=sorted(sub["gold"].unique()))
        ax.set_title(bench)
        ax.set_xlabel("gold letter")
        ax.set_ylabel("recall of the letter (%)")
        ax.set_ylim(0, 100)
        if ax is not axes[0][-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle("Per-letter recall: flat = no letter preference")
    fig.tight_layout()
    return fig


def plot_completion_length(metrics: pd.DataFrame) -> Figure:
    """Mean completion length over steps, and the share of completions cut at max_completion_length.

    Args:
        metrics: `load_metrics` output (needs `step`, `completion_length`; `clipped_ratio` optional).

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
        metrics: `load_metrics` output.
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


# --- evaluation -----------------------------------------------------------------------------------


def _measured_label(row: pd.Series) -> str:
    # The eval label ("base", "trained") is short and is what the run calls it; the model spec is long.
    name = row.get("label") if isinstance(row.get("label"), str) and row.get("label") else row["model"]
    scorer = row.get("scorer")
    label = f"{name} · {scorer}" if isinstance(scorer, str) and scorer else str(name)
    # results.csv says whether the row is comparable with the published bars beside it, and if not, why.
    verdict = row.get("comparability")
    if isinstance(verdict, str) and verdict:
        label += "\n" + verdict
    return label


def plot_accuracy(results: pd.DataFrame, chance: Mapping[str, float] | None = None,
                  include_reference: bool = True) -> Figure:
    """Accuracy per benchmark: our runs (with 95% CIs) beside published numbers, and the chance level.

    One panel per benchmark we measured. Our bars are coloured by scorer ("measured here"); published
    rows for the same benchmark are drawn light grey and hatched ("reported by"); a dashed line marks the
    accuracy of guessing uniformly among the options.

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
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols + 1.5, height * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)

    for ax, bench, key in zip(axes.flat, benches, keys, strict=False):
        sub = df[df["key"] == key]
        ours = sub[sub["measured"]]
        refs = sub[~sub["measured"]].sort_values("accuracy", ascending=False)
        labels = [_measured_label(r) for _, r in ours.iterrows()] + refs["model"].astype(str).tolist()
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
            ax.text((h if not math.isnan(h) else a) + 1.5, yi, f"{a:.1f}", va="center", fontsize="x-small")
        if key in chance:
            ax.axvline(100 * chance[key], color="0.3", linestyle="--", linewidth=1.2)
        ax.set_yticks(y, labels, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        n = ours["n"].dropna()
        ax.set_title(f"{bench}" + (f" (n = {int(n.iloc[0])})" if len(n) else ""))
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
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize="small",
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(handles) > 3), 1, 1))
    return fig


def plot_extraction_rules(predictions: Mapping[str, pd.DataFrame]) -> Figure:
    """Share of answers per extraction rule, per evaluated model (e.g. base vs trained), unparsed in grey.

    A model that "improves" by learning the answer format shows it here before it shows in accuracy.

    Args:
        predictions: {label: `load_predictions` frame}.

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
    ax.set_title("How answers were extracted")
    ax.legend(title="extraction rule", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    return fig


def paired_table(base: pd.DataFrame, trained: pd.DataFrame, correct_col: str = "correct") -> pd.DataFrame:
    """Per-benchmark counts of the four paired outcomes plus the exact McNemar p-value.

    Questions are paired by (benchmark, id); questions only one model answered are left out and counted
    in `n_unpaired`. A question asked under several option rotations is right when right under all of
    them (consistent correctness).

    >>> b = pd.DataFrame({"benchmark": ["m"] * 3, "id": ["1", "2", "3"], "correct": [True, False, False]})
    >>> t = b.assign(correct=[True, True, True])
    >>> r = paired_table(b, t).iloc[0]
    >>> int(r["both right"]), int(r["only trained right"]), float(r["p_value"])
    (1, 2, 0.5)
    """
    base, trained = (df.groupby(["benchmark", "id"], sort=False, as_index=False)[correct_col].agg(
        lambda s: bool(s.astype(bool).all())) for df in (base, trained))
    merged = base[["benchmark", "id", correct_col]].merge(
        trained[["benchmark", "id", correct_col]], on=["benchmark", "id"], suffixes=("_base", "_trained"))
    rows = []
    benches = list(dict.fromkeys(list(base["benchmark"]) + list(trained["benchmark"])))
    for bench in benches:
        sub = merged[merged["benchmark"] == bench]
        a = sub[f"{correct_col}_base"].astype(bool).to_numpy()
        b = sub[f"{correct_col}_trained"].astype(bool).to_numpy()
        total = int((base["benchmark"] == bench).sum() + (trained["benchmark"] == bench).sum())
        test = mcnemar_exact(a, b)
        rows.append({"benchmark": bench, "n": len(sub),
                     "both right": int((a & b).sum()), "only base right": int((a & ~b).sum()),
                     "only trained right": int((~a & b).sum()), "both wrong": int((~a & ~b).sum()),
                     "acc_base": a.mean() if len(a) else math.nan,
                     "acc_trained": b.mean() if len(b) else math.nan,
                     "p_value": test.p_value, "n_unpaired": total - 2 * len(sub)})
    return pd.DataFrame(rows)


def plot_paired(predictions_base: pd.DataFrame, predictions_trained: pd.DataFrame,
                correct_col: str = "correct") -> Figure:
    """Base vs trained on the same questions: shares of the four paired outcomes per benchmark.

    Only the discordant cells ("only base right", "only trained right") can move accuracy; the exact
    McNemar p-value on them is written beside each bar.

    Args:
        predictions_base, predictions_trained: `load_predictions` frames of the two models.
        correct_col: the verdict column to compare.

    Returns:
        The figure: one stacked horizontal bar per benchmark.

    >>> b = pd.DataFrame({"benchmark": ["m"] * 2, "id": ["1", "2"], "correct": [True, False]})
    >>> len(plot_paired(b, b).axes[0].patches)
    4
    """
    use_style()
    table = paired_table(predictions_base, predictions_trained, correct_col)
    table = table[table["n"] > 0]
    if table.empty:
        raise ValueError("base and trained predictions share no (benchmark, id): nothing to pair")
    cb = sns.color_palette("colorblind")
    colors = {"both right": cb[2], "only base right": cb[3], "only trained right": cb[0], "both wrong": "0.8"}
    fig, ax = plt.subplots(figsize=(11, 0.9 * len(table) + 2.0))
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for cat in _PAIR_CATEGORIES:
        vals = 100 * table[cat].to_numpy(dtype=float) / table["n"].to_numpy(dtype=float)
        ax.barh(y, vals, left=left, color=colors[cat], label=cat, edgecolor="white", linewidth=0.6)
        for yi, lft, v, c in zip(y, left, vals, table[cat], strict=True):
            if v >= 6:
                ax.text(lft + v / 2, yi, str(c), ha="center", va="center", fontsize="x-small")
        left += vals
    for yi, (_, r) in zip(y, table.iterrows(), strict=True):
        ax.annotate(f"{100 * r['acc_base']:.1f}% → {100 * r['acc_trained']:.1f}%\nMcNemar p = {r['p_value']:.3g}",
                    xy=(1.01, yi), xycoords=("axes fraction", "data"), va="center", fontsize="x-small")
    ax.set_yticks(y, [f"{b} (n = {n})" for b, n in zip(table["benchmark"], table["n"], strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of paired questions (%)  ·  numbers in bars: questions")
    ax.set_title("Base vs trained on the same questions")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.1 / max(len(table), 1)), ncol=4,
              fontsize="small")
    fig.tight_layout()
    return fig


# --- everything -----------------------------------------------------------------------------------


def _run_params(run_dir: Path) -> dict:
    """The run's resolved params.yaml, or {} when absent or unreadable (figures never need it to exist)."""
    try:
        values = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def make_all_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                     reference: str | Path | None = None) -> list[Path]:
    """Make every figure whose artifacts exist; log (warning) each skipped figure and why.

    Args:
        run_dir: `runs/<name>/`.
        out_dir: where to write; default `run_dir/figures/`.
        reference: published numbers for the accuracy figure; default the run's `reference_results`
            param, else params/reference_results.yaml; used only when results.csv lacks reported rows.

    Returns:
        The written files (a PNG and a PDF per figure).

    >>> import tempfile; make_all_figures(tempfile.mkdtemp())
    []
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    written: list[Path] = []
    run_params = _run_params(run_dir)
    if reference is None:
        reference = resolve_repo_path(run_params.get("reference_results") or REFERENCE_FILE)
    beta = run_params.get("beta")

    def skip(name: str, reason: str) -> None:
        logger.warning("skipped figure %r: %s", name, reason)

    def emit(name: str, make) -> None:
        try:
            fig = make()
        except (ValueError, KeyError) as e:  # artifact present but lacks what this figure needs
            skip(name, str(e))
            return
        written.extend(save_figure(fig, out_dir, name))
        plt.close(fig)
        logger.info("wrote figure %s", out_dir / name)

    metrics_csv = run_dir / "train" / "metrics.csv"
    metrics = None
    if not metrics_csv.is_file():
        for name in ("training_curves", "completion_length", "kl"):
            skip(name, f"{metrics_csv} not found (no training run)")
    else:
        try:
            metrics = load_metrics(metrics_csv)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            for name in ("training_curves", "completion_length", "kl"):
                skip(name, f"{metrics_csv} unreadable ({e})")
    if metrics is not None:
        if metrics.empty:
            for name in ("training_curves", "completion_length", "kl"):
                skip(name, f"{metrics_csv} has no rows yet")
        else:
            emit("training_curves", lambda: plot_training_curves(metrics))
            emit("completion_length", lambda: plot_completion_length(metrics))
            if has_kl(metrics):
                emit("kl", lambda: plot_kl(metrics, beta))
            else:
                skip("kl", f"no KL logged (beta = {beta})")

    predictions = {k: v for k, v in load_all_predictions(run_dir).items() if not v.empty}
    results = load_results(run_dir, reference)
    if results.empty:
        skip("accuracy", f"neither {run_dir / 'results.csv'} nor eval/*/summary.json found")
    else:
        emit("accuracy", lambda: plot_accuracy(results, chance_levels(results, predictions)))

    if not predictions:
        skip("extraction_rules", f"no {run_dir / 'eval'}/<label>/predictions.jsonl found")
    else:
        emit("extraction_rules", lambda: plot_extraction_rules(predictions))
    if predictions:
        emit("letter_recall", lambda: plot_letter_recall(predictions))
    else:
        skip("letter_recall", f"no {run_dir / 'eval'}/<label>/predictions.jsonl found")
    if "base" in predictions and "trained" in predictions:
        emit("paired_base_vs_trained", lambda: plot_paired(predictions["base"], predictions["trained"]))
    else:
        skip("paired_base_vs_trained", f"needs eval/base and eval/trained predictions, found {sorted(predictions)}")
    return written
