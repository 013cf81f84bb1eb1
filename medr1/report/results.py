"""The results table: our measured accuracies beside published ones, and paired base-vs-trained tests.

Readers compare our numbers with the papers', so the table makes the provenance of every row explicit:
rows we computed say "measured here" and carry their scorer, n and 95 % bootstrap interval; rows copied
from publications say "reported by" and carry the citation, the scorer those authors used and the
evaluation set behind the number (which is not always ours). Nothing here generates text: it reads
`eval/<label>/summary.json`, `predictions.jsonl` and `params/reference_results.yaml` through
`medr1.artifacts`, the one reader of each.

Comparisons between two of our models are paired (same questions): exact McNemar for "is there a
difference" and a paired bootstrap interval for "how large" (`medr1.evaluation.stats`), aligned by question id so
a partially evaluated model is compared only on the questions both answered. `paired_table` is the one
implementation; the paired figure draws its output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from medr1.artifacts import eval_predictions, read_predictions, read_reference, read_summaries, row_key
from medr1.data import FIT_BENCHMARK, FIT_LABEL, benchmark_title
from medr1.evaluation.scoring import score
from medr1.evaluation.stats import breakdown, mcnemar_exact, paired_bootstrap_diff
from medr1.paths import resolve_repo_path
from medr1.runs import RunDir, atomic_write_text
from medr1.task.answers import extract_choice
from medr1.task.letter_bias import consistent_correct
from medr1.task.protocols import comparability

MEASURED = "measured here"
REPORTED = "reported by"
COLUMNS = ["provenance", "model", "label", "benchmark", "scorer", "accuracy", "ci_low", "ci_high", "n",
           "unparsed", "consistent_accuracy", "n_questions", "permutations", "answer_top_share", "letter_recall_std",
           "eval_set", "source", "n_dropped", "protocol", "set_size", "seed_std", "n_seeds", "comparability",
           "paired_with", "paired_difference", "paired_diff_low", "paired_diff_high", "paired_p_value"]
# The paired test of a label against another (`write_results`' pairs), on the row of the later model.
PAIRED_INTO_TABLE = {"paired_difference": "difference", "paired_diff_low": "diff_low",
                     "paired_diff_high": "diff_high", "paired_p_value": "p_value"}


def _pct(x) -> float:
    return math.nan if x is None else 100.0 * x


def results_table(run_dirs_or_summaries: Iterable | str | Path | dict,
                  reference_yaml: str | Path | None = None) -> pd.DataFrame:
    """Measured rows (ours) and reported rows (published), one row per model x benchmark x scorer.

    Args:
        run_dirs_or_summaries: run directories, eval directories, summary.json paths or summary dicts.
        reference_yaml: published numbers to add (None: none).

    Returns:
        DataFrame with `COLUMNS`; accuracies and CI bounds in percent; `provenance` is "measured here"
        or "reported by"; `source` is the model spec/adapter for ours and the citation for theirs.

    >>> df = results_table([], "params/reference_results.yaml")  # doctest: +SKIP
    >>> set(df.provenance)  # doctest: +SKIP
    {'reported by'}
    """

    ref = read_reference(reference_yaml) if reference_yaml is not None else None
    rows = []
    for label, summary in read_summaries(run_dirs_or_summaries):
        model = summary.get("model", "?")
        if summary.get("adapter"):
            model = f"{model} + LoRA ({label})"
        source = f"{summary.get('model')}" + (f" + {summary['adapter']}" if summary.get("adapter") else "")
        record = summary.get("protocol")  # absent: the eval_* params, i.e. protocol medr1
        for scorer, per_bench in summary.get("scores", {}).items():
            for bench, s in per_bench.items():
                set_info = (record or {}).get("benchmarks", {}).get(bench, {})
                rows.append({"provenance": MEASURED, "model": model, "label": label, "benchmark": bench,
                             "scorer": scorer, "accuracy": _pct(s.get("accuracy")), "ci_low": _pct(s.get("ci_low")),
                             "ci_high": _pct(s.get("ci_high")), "n": s.get("n"), "unparsed": s.get("unparsed"),
                             "consistent_accuracy": _pct(s.get("consistent_accuracy")),
                             "n_questions": s.get("n_questions"), "permutations": s.get("permutations"),
                             "answer_top_share": _pct(s.get("answer_top_share")),
                             "letter_recall_std": _pct(s.get("letter_recall_std")),
                             "eval_set": FIT_LABEL if bench == FIT_BENCHMARK else set_info.get("title") or
                             f"{bench} {summary.get('settings', {}).get('split', '')}".strip(),
                             "source": source, "n_dropped": s.get("n_dropped", 0),
                             "protocol": (record or {}).get("protocol", "medr1"), "set_size": set_info.get("set_size"),
                             "seed_std": _pct(s.get("seed_std")), "n_seeds": len(s.get("seed_accuracies") or []) or 1,
                             "comparability": comparability(bench, scorer, record, ref)})
    if ref is not None:
        citation = " ".join(str(ref["citation"]).split())
        scorer = "huatuo (theirs)"
        for m in ref["models"]:
            # A row's own protocol (Med-R1-alpha's is "unknown"), else the file's.
            protocol = m.get("protocol", ref.get("protocol"))
            for bench, acc in m["accuracy"].items():
                rows.append({"provenance": REPORTED, "model": m["model"], "label": None, "benchmark": bench,
                             "scorer": scorer, "accuracy": float(acc), "ci_low": math.nan, "ci_high": math.nan,
                             "n": None, "unparsed": None, "eval_set": ref.get("eval_sets", {}).get(bench),
                             # a row may name its own source (AlphaMed's numbers are not from the Med-R1 README)
                             "source": " ".join(str(m["citation"]).split()) if m.get("citation") else citation,
                             "protocol": protocol,
                             "set_size": ((ref.get("published_sets") or {}).get(bench) or {}).get("size"),
                             "comparability": "published" if protocol != "unknown" else
                             "published; protocol unknown"})
    return pd.DataFrame(rows, columns=COLUMNS)


def answer_distribution(run_dir: str | Path) -> pd.DataFrame:
    """Per eval label and benchmark: the most frequent extracted answer and its share, beside the best
    accuracy a constant answer could get on these questions (the largest share of one gold letter).

    A small model under RL can collapse to answering one letter whatever the question, and its accuracy
    then equals that letter's share of the gold answers: an "improvement" that is letter bias, not
    medicine. This table makes that visible next to every accuracy.
    """
    rows = []
    for label, preds in eval_predictions(run_dir).items():
        frame = pd.DataFrame(preds)
        if frame.empty:
            continue
        if "extracted" not in frame:  # rows written by hand or by an older version: extract as evaluation does

            frame["extracted"] = [extract_choice(c, o) for c, o in zip(frame["completion"], frame["options"], strict=True)]
        for bench, sub in frame.groupby("benchmark", sort=False):
            answers = sub["extracted"].fillna("(unparsed)").value_counts()
            rows.append({"label": label, "benchmark": bench, "n": len(sub),
                         "most_common_answer": answers.index[0], "share": 100 * answers.iloc[0] / len(sub),
                         "constant_answer_baseline": 100 * sub["gold"].value_counts().iloc[0] / len(sub),
                         "distinct_answers": int(sub["extracted"].nunique())})
    return pd.DataFrame(rows, columns=["label", "benchmark", "n", "most_common_answer", "share",
                                       "constant_answer_baseline", "distinct_answers"])


def category_breakdown(run_dir: str | Path) -> pd.DataFrame:
    """Strict accuracy per subject/category with a bootstrap CI, for benchmarks whose questions carry one
    (MMLU subjects, MMLU-Pro categories); empty when none do."""

    frames = []
    for label, preds in eval_predictions(run_dir).items():
        frame = pd.DataFrame(preds)
        if "category" not in frame or frame["category"].isna().all():
            continue
        for bench, sub in frame.dropna(subset=["category"]).groupby("benchmark", sort=False):
            table = breakdown(sub.assign(correct=sub["correct"].astype(bool)), "category")
            frames.append(table.assign(label=label, benchmark=bench))
    if not frames:
        return pd.DataFrame(columns=["label", "benchmark", "category", "n", "accuracy", "ci_low", "ci_high"])
    out = pd.concat(frames, ignore_index=True)
    for col in ("accuracy", "ci_low", "ci_high"):
        out[col] = 100 * out[col]
    return out[["label", "benchmark", "category", "n", "accuracy", "ci_low", "ci_high"]]


def modality_breakdown(run_dir: str | Path) -> pd.DataFrame:
    """Accuracy per imaging modality (MRI, CT, X-ray, ...) with its 95 % bootstrap CI, per eval label,
    benchmark and scorer, from the `by_modality` block of each `eval/<label>/summary.json` (written for
    visual benchmarks whose questions carry a modality); empty for text-only runs."""
    rows = []
    for label, summary in read_summaries(run_dir) if RunDir(run_dir).eval_dir.is_dir() else []:
        for scorer, per_bench in (summary.get("by_modality") or {}).items():
            for bench, per_modality in per_bench.items():
                for modality, m in per_modality.items():
                    rows.append({"label": label, "benchmark": bench, "scorer": scorer, "modality": modality,
                                 "n": m.get("n"), "accuracy": _pct(m.get("accuracy")), "ci_low": _pct(m.get("ci_low")),
                                 "ci_high": _pct(m.get("ci_high"))})
    return pd.DataFrame(rows, columns=["label", "benchmark", "scorer", "modality", "n", "accuracy", "ci_low", "ci_high"])


PAIRED_COLUMNS = ["benchmark", "scorer", "a", "b", "n", "acc_a", "acc_b", "difference", "diff_low", "diff_high",
                  "b01", "b10", "p_value", "both_right", "both_wrong"]


def paired_table(preds_a: list[dict], preds_b: list[dict], scorer: str = "strict", *, a: str = "base",
                 b: str = "trained", seed: int = 0) -> pd.DataFrame:
    """Model `b` vs model `a` on the questions both answered, per benchmark: the one paired test.

    The unit is the question: with each question asked under K option rotations, a question is right when
    it is right under every rotation (`consistent_accuracy`); with K = 1 that is the row's verdict. A
    question counts as answered by a model when all its rotations were, and is paired only where both
    asked the same rotations; rows a scorer drops (huatuo's empty outputs) leave their question out.
    Pairing is by (benchmark, id), never by row order.

    Args:
        preds_a, preds_b: prediction rows (`medr1.artifacts.read_predictions`).
        scorer: scorer both are scored with.
        a, b: labels written into the table; positive differences mean b is better.
        seed: bootstrap seed.

    Returns:
        DataFrame with `PAIRED_COLUMNS`: n (paired questions), acc_a, acc_b, difference (b - a) and its 95 %
        paired-bootstrap interval (percentage points), the four outcome counts (both_right, b10: only a
        right, b01: only b right, both_wrong) and the exact McNemar p-value over b01 and b10.

    >>> rows = lambda ok: [{"benchmark": "m", "id": i, "gold": "A", "options": {"A": "x", "B": "y"},
    ...                     "completion": "<answer>A</answer>" if c else "<answer>B</answer>"} for i, c in enumerate(ok)]
    >>> r = paired_table(rows([1, 0, 0]), rows([1, 1, 1])).iloc[0]
    >>> int(r["both_right"]), int(r["b01"]), float(r["p_value"])
    (1, 2, 0.5)
    """

    verdicts, rotations = {}, {}
    for label, preds in ((a, preds_a), (b, preds_b)):
        scored = [(row_key(r), v) for r, v in zip(preds, score(preds, scorer).rows, strict=True)]
        dropped = {k[:2] for k, v in scored if not v.counted}
        verdicts[label] = consistent_correct((k[:2], v.correct) for k, v in scored if k[:2] not in dropped)
        shifts: dict[tuple, set] = {}
        for k, _ in scored:
            shifts.setdefault(k[:2], set()).add(k[2])
        rotations[label] = shifts
    rows = []
    for bench in dict.fromkeys(k[0] for k in verdicts[a]):
        keys = [k for k in verdicts[a] if k[0] == bench and k in verdicts[b] and rotations[a][k] == rotations[b][k]]
        xa = [bool(verdicts[a][k]) for k in keys]
        xb = [bool(verdicts[b][k]) for k in keys]
        mc = mcnemar_exact(xa, xb)
        diff = paired_bootstrap_diff(xa, xb, seed=seed)
        n = len(keys)
        rows.append({"benchmark": bench, "scorer": scorer, "a": a, "b": b, "n": n,
                     "acc_a": 100 * sum(xa) / n if n else math.nan, "acc_b": 100 * sum(xb) / n if n else math.nan,
                     "difference": 100 * diff.estimate, "diff_low": 100 * diff.low, "diff_high": 100 * diff.high,
                     "b01": mc.b01, "b10": mc.b10, "p_value": mc.p_value,
                     "both_right": sum(x and y for x, y in zip(xa, xb, strict=True)),
                     "both_wrong": sum(not (x or y) for x, y in zip(xa, xb, strict=True))})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_comparison(run_dir: str | Path, a: str = "base", b: str = "trained", scorer: str = "strict", *,
                      seed: int = 0) -> pd.DataFrame:
    """`paired_table` of eval/<a>/ and eval/<b>/predictions.jsonl of one run.

    Raises:
        FileNotFoundError: one of the two was not evaluated.
    """
    run = RunDir(run_dir)
    preds = {}
    for label in (a, b):
        path = run.eval_dir / label / "predictions.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no predictions for {label!r} at {path}; evaluate it first")
        preds[label] = read_predictions(path)
    return paired_table(preds[a], preds[b], scorer, a=a, b=b, seed=seed)


PASS_AT_K_COLUMNS = ["model", "label", "benchmark", "protocol", "scorer", "k", "pass_at_k", "ci_low", "ci_high", "n"]


def pass_at_k_table(run_dirs_or_summaries: Iterable | str | Path | dict) -> pd.DataFrame:
    """pass@k (percent) with its 95 % bootstrap interval, one row per model x benchmark x scorer x k, from the
    `pass_at_k` blocks summary.json has for evaluations with several samples per question (protocol
    `medr1-sampled`, or eval_num_samples > 1); empty when there are none."""
    rows = []
    for label, summary in read_summaries(run_dirs_or_summaries):
        protocol = (summary.get("protocol") or {}).get("protocol", "medr1")
        for scorer, per_bench in summary.get("scores", {}).items():
            for bench, s in per_bench.items():
                for k, value in (s.get("pass_at_k") or {}).items():
                    low, high = (s.get("pass_at_k_ci") or {}).get(k) or (None, None)
                    rows.append({"model": summary.get("model", "?"), "label": label, "benchmark": bench,
                                 "protocol": protocol, "scorer": scorer, "k": int(k), "pass_at_k": _pct(value),
                                 "ci_low": _pct(low), "ci_high": _pct(high), "n": s.get("n")})
    return pd.DataFrame(rows, columns=PASS_AT_K_COLUMNS)


def _pass_at_k_markdown(table: pd.DataFrame) -> list[str]:
    """results.md's pass@k section: one line per label x benchmark x scorer, one column per k."""
    wide = table.assign(cell=[f"{r.pass_at_k:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]" for r in table.itertuples()])
    wide = wide.pivot_table(index=["label", "benchmark", "protocol", "scorer", "n"], columns="k", values="cell",
                            aggfunc="first", sort=False)
    wide.columns = [f"pass@{k}" for k in wide.columns]
    return ["## pass@k", "",
            "Several samples per question (protocol `medr1-sampled`: 8 at temperature 0.6): pass@k (%) is the chance "
            "that at least one of k samples is right, Chen et al. (2021)'s unbiased estimator from all n samples, "
            "with a 95 % bootstrap interval over questions. RL-trained models often gain at pass@1 and lose at "
            "large k (Yue et al. 2025): the trained model's edge should be read at every k.", "",
            _markdown(wide.reset_index()), ""]


def compare_arms(run_dir: str | Path, other_run: str | Path, scorer: str = "strict", *,
                 seed: int = 0) -> pd.DataFrame:
    """This run vs the other arm of its experiment (true vs random reward), paired on the same questions.

    Each evaluation label both runs hold with a predictions.jsonl (`trained` under protocol medr1,
    `trained@medr1-sampled`, ...) is compared with `paired_table` (a = the other run, b = this one, so
    a positive difference favours this run); a label of a seeded protocol (`trained@huatuo-o1`) is
    compared on its first seed, the same seed in both runs. Labels only one run has are left out.

    Returns:
        `PAIRED_COLUMNS` plus `label`; empty when the runs share no evaluated label.
    """
    this, other = RunDir(run_dir), RunDir(other_run)
    frames = []
    for path in sorted(this.eval_dir.glob("*/")) if this.eval_dir.is_dir() else []:
        label = path.name
        files = [path / "predictions.jsonl", *sorted(path.glob("seed-*/predictions.jsonl"))[:1]]
        mine = next((f for f in files if f.is_file()), None)
        theirs = other.eval_dir / mine.relative_to(this.eval_dir) if mine else None
        if label == "base" or mine is None or not theirs.is_file():
            continue  # base is the same model in both arms
        table = paired_table(read_predictions(theirs), read_predictions(mine), scorer, a=other.path.name,
                             b=this.path.name, seed=seed)
        frames.append(table.assign(label=label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PAIRED_COLUMNS, "label"])


def _fmt(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and x.is_integer() and digits == 0:
        return str(int(x))
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub table without the optional `tabulate` dependency of DataFrame.to_markdown."""
    # counts print as integers even after a float round trip
    counts = {"n", "unparsed", "b01", "b10", "distinct_answers", "n_dropped", "n_questions", "permutations"}
    cells = [[_fmt(v, 3 if c == "p_value" else 0 if c in counts else 1) for c, v in row.items()]
             for _, row in df.iterrows()]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in cells]
    return "\n".join(lines)


def write_results(run_dir: str | Path, reference_yaml: str | Path | None = "params/reference_results.yaml",
                  *, pairs: Iterable[tuple[str, str]] = (("base", "trained"),),
                  compare_run: str | Path | None = None) -> pd.DataFrame:
    """Write `results.csv` (the long table) and `results.md` (readable tables) into the run directory, with
    `results_pass_at_k.csv` and `results_arms.csv` when there is something to put there.

    Args:
        run_dir: the run directory, with eval/<label>/summary.json files.
        reference_yaml: published numbers (relative paths are relative to the repo root); None: omit.
        pairs: (a, b) eval labels compared with `paired_comparison` when both were evaluated.
        compare_run: the other arm's run directory (`params.compare_run` under runs_dir): `compare_arms`.

    Returns:
        The results table written to results.csv.
    """

    run = RunDir(run_dir)
    ref_path = resolve_repo_path(reference_yaml) if reference_yaml is not None else None
    table = results_table([run.path] if run.eval_dir.is_dir() else [], ref_path)
    ours = table[table.provenance == MEASURED]
    paired = {(a, b, scorer): paired_comparison(run.path, a, b, scorer)
              for a, b in pairs if all((run.eval_dir / x / "predictions.jsonl").is_file() for x in (a, b))
              for scorer in dict.fromkeys(ours.scorer) or ["strict"]}
    table = table.astype({"paired_with": object})
    for (a, b, scorer), frame in paired.items():  # the p-value beside the accuracy it is about, in results.csv
        for r in frame.itertuples():
            at = (table.provenance == MEASURED) & (table.label == b) & (table.benchmark == r.benchmark) & \
                (table.scorer == scorer) & (table.protocol == "medr1")
            table.loc[at, "paired_with"] = a
            for column, field in PAIRED_INTO_TABLE.items():
                table.loc[at, column] = getattr(r, field)
    atomic_write_text(run.path / "results.csv", table.to_csv(index=False))

    md = [f"# Results: {run.path.name}", ""]
    ours = table[table.provenance == MEASURED].assign(benchmark=lambda t: t.benchmark.map(benchmark_title))
    if FIT_BENCHMARK in set(table.benchmark):
        md += [f"**{FIT_LABEL}.** Benchmark `{FIT_BENCHMARK}` holds this run's own training questions, asked under "
               "option rotations that training never used (`fit_check`): a positive control that the training "
               "learns what its reward pays for. Its accuracy says nothing about questions the model was not "
               "trained on.", ""]
    if len(ours):
        shown = ours.assign(**{"accuracy (95% CI)": [
            (f"{r.accuracy:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]" if not math.isnan(r.ci_low) else _fmt(r.accuracy))
            + (f" ± {r.seed_std:.1f} sd over {r.n_seeds} seeds" if r.n_seeds > 1 and not math.isnan(r.seed_std) else "")
            for r in ours.itertuples()]})
        md += ["## Measured here", "",
               "Accuracy (%) with a 95 % bootstrap interval (sampled protocols: mean over seeds, the interval over "
               "questions, ± the seeds' standard deviation); `strict` is our scorer (unparsed = wrong, nothing "
               "dropped), `huatuo` reproduces HuatuoGPT-o1's optimistic scorer, which leaves empty outputs "
               "(`n_dropped`, e.g. prompts too long for the context) out of its denominator. A row is comparable "
               "with the published numbers only under their protocol, scorer and set; `comparability` says why "
               "not otherwise.", "",
               _markdown(shown[["model", "benchmark", "protocol", "scorer", "accuracy (95% CI)", "n", "unparsed",
                                "n_dropped", "comparability"]]), ""]
        md += ["## Letter bias", "",
               "Each question asked under K rotations of its options (`eval_permutations`). `consistent_accuracy`: "
               "% of questions right under every rotation (a model answering by letter gets 0; with K = 1 it is "
               "the accuracy). `answer_top_share`: % of answers that are the most frequent letter (1/k for a "
               "balanced k-option answerer, 100 for a collapsed one). `letter_recall_std`: standard deviation over "
               "gold letters of the recall of each letter, in points (0 = no letter preference; Zheng et al., "
               "ICLR 2024).", "",
               _markdown(ours[["model", "benchmark", "protocol", "scorer", "permutations", "n_questions",
                               "consistent_accuracy", "answer_top_share", "letter_recall_std"]]), ""]
    else:
        md += ["No evaluation summaries found under eval/.", ""]
    for (a, b, scorer), frame in paired.items():
        md += [f"## Paired comparison: {b} vs {a} ({scorer} scorer)", "",
               "Same questions; a question is right when it is right under every option rotation it was asked "
               "with (the accuracy itself when K = 1); difference = accuracy(b) - accuracy(a) in points with a "
               "paired-bootstrap 95 % interval; exact McNemar p-value over the discordant questions (b01: a "
               "wrong, b right). Also in results.csv (`paired_*` columns, on the rows of the later model).",
               "", _markdown(frame.drop(columns=["both_right", "both_wrong"])
                             .assign(benchmark=lambda t: t.benchmark.map(benchmark_title))), ""]
    passk = pass_at_k_table([run.path] if run.eval_dir.is_dir() else [])
    if len(passk):
        atomic_write_text(run.path / "results_pass_at_k.csv", passk.to_csv(index=False))
        md += _pass_at_k_markdown(passk)
    if compare_run is not None:
        md += _arms_markdown(run, Path(compare_run), ours.scorer if len(ours) else [])
    spread = answer_distribution(run.path).assign(benchmark=lambda t: t.benchmark.map(benchmark_title))
    if len(spread):
        md += ["## Answer distribution", "",
               "Most frequent extracted answer and its share (%); `constant_answer_baseline` is the accuracy of always "
               "giving the most frequent gold letter on these questions. An accuracy near that baseline with one "
               "dominant answer is letter bias, not knowledge.", "", _markdown(spread), ""]
    by_modality = modality_breakdown(run.path)
    if len(by_modality):
        atomic_write_text(run.path / "results_by_modality.csv", by_modality.to_csv(index=False))
        md += ["## Accuracy per imaging modality", "",
               "Visual benchmarks whose questions carry a modality; 95 % bootstrap intervals.", "",
               _markdown(by_modality), ""]
    by_category = category_breakdown(run.path)
    if len(by_category):
        md += ["## Accuracy per subject / category (strict)", "", _markdown(by_category), ""]
    theirs = table[table.provenance == REPORTED]
    if len(theirs):
        ref = read_reference(ref_path)
        wide = theirs.assign(protocol=theirs.protocol.fillna("not stated")).pivot_table(
            index=["model", "protocol"], columns="benchmark", values="accuracy", sort=False).reset_index()
        md += ["## Reported by others (not measured here)", "",
               f"Source: {' '.join(str(ref['citation']).split())}", "",
               *[f"Source of {m['model']}: {' '.join(str(m['citation']).split())} (protocol: {m.get('protocol')})\n"
                 for m in ref["models"] if m.get("citation")],
               f"Scorer: {' '.join(str(ref.get('scorer', '')).split())}", "",
               _markdown(wide), ""]
        md += [f"Protocol of {m['model']}: {m['protocol']} ({' '.join(str(m['protocol_note']).split())})." for m in
               ref["models"] if m.get("protocol_note")] + ["", "Evaluation sets behind these numbers (the "
                                                            f"{ref.get('protocol')} rows):", ""]
        md += [f"- {k}: {v}" for k, v in ref.get("eval_sets", {}).items()] + [""]
    atomic_write_text(run.path / "results.md", "\n".join(md))
    return table


def _arms_markdown(run: RunDir, other: Path, scorers) -> list[str]:
    """results.md's section comparing this run with the other arm (`compare_arms`), and results_arms.csv."""
    md = [f"## Arms: {run.path.name} vs {other.name}", "",
          "The two arms of one experiment (true reward vs random reward, `reward_control`), trained alike and "
          f"evaluated on the same questions; difference = accuracy({run.path.name}) - accuracy({other.name}) in "
          "points with a paired-bootstrap 95 % interval, exact McNemar p-value over the discordant questions (b01: "
          "right only here). A gain over base that the random-reward arm shows too is not a gain from the reward "
          "(Shao et al. 2025). Seeded protocols are paired on their first seed.", ""]
    tables = [compare_arms(run.path, other, scorer) for scorer in dict.fromkeys(scorers) or ["strict"]]
    table = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else None
    if table is None:
        return md + [f"Not compared yet: {other} holds no evaluation label this run has (evaluate the other arm, "
                     f"then write the results again).", ""]
    atomic_write_text(run.path / "results_arms.csv", table.to_csv(index=False))
    return md + [_markdown(table[["label", *PAIRED_COLUMNS]].drop(columns=["both_right", "both_wrong"])), ""]


def results_section(run_dir: str | Path, heading: str) -> str:
    """The sections of the run's `results.md` whose `## ` heading starts with `heading` (caption and table
    included, headings demoted to `###`), so that a notebook shows `write_results`' tables one idea at a
    time under its own captions; a line saying so when the run has no such section.

    >>> import tempfile; from pathlib import Path; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "results.md").write_text("# Results: x\\n\\n## Letter bias\\n\\ntext\\n\\n## Answer distribution\\n")
    >>> results_section(d, "Letter")
    '### Letter bias\\n\\ntext'
    """
    path = RunDir(run_dir).path / "results.md"
    sections = re.split(r"(?m)^(?=## )", path.read_text(encoding="utf-8"))
    found = ["#" + part.strip() for part in sections if part.startswith(f"## {heading}")]
    return "\n\n".join(found) or f"*No \"{heading}\" section in {path.name}: not measured in this run.*"


def answer_examples(run_dir: str | Path, label: str,
                    columns: Iterable[str] = ("benchmark", "id", "gold", "extracted", "rule", "completion"),
                    ) -> dict[str, pd.DataFrame]:
    """The predictions of eval/<label>/ split into right, wrong (a letter, not the gold one) and unparsed
    answers (no letter: counted wrong by the strict scorer), each in file order, for reading by eye.

    Args:
        run_dir: the run directory.
        label: eval label, e.g. "trained".
        columns: columns kept (those a row lacks are left out).

    Returns:
        {"right": frame, "wrong": frame, "unparsed": frame}; together they hold every row once.
    """
    frame = pd.DataFrame(read_predictions(RunDir(run_dir).eval_dir / label / "predictions.jsonl"))
    if frame.empty:
        return {kind: pd.DataFrame(columns=list(columns)) for kind in ("right", "wrong", "unparsed")}
    parsed = frame["extracted"].notna()
    correct = frame["correct"].fillna(False).astype(bool)
    kept = [c for c in columns if c in frame.columns]
    return {"right": frame[correct][kept], "wrong": frame[~correct & parsed][kept], "unparsed": frame[~parsed][kept]}
