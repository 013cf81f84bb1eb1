"""Run artifacts: the one reader (and writer) of each file a run leaves behind.

`predictions.jsonl`, `summary.json`, `train/metrics.csv`, `train/samples.jsonl` and
`params/reference_results*.yaml` are each read here and nowhere else, so that evaluation, the results
table and the figures count the same rows. One rule per file:

- predictions.jsonl: a row is keyed by (benchmark, id, shift); a duplicate key keeps the first row (the
  one resume compared its prompt hash with). A last line that does not parse is what a kill -9 leaves
  mid-write: it is dropped with a warning (and, for the writer about to append, the file is rewritten
  without it). A bad line anywhere else is not the damage of a crash: `ArtifactError`, never a guess.
- samples.jsonl: the same JSON-lines rule (whole lines only, a cut last line dropped and reported).
- metrics.csv: one row per step, in step order; a step logged twice (a resume that re-logged it) keeps
  its last row; a row whose step does not parse (a line cut by a kill) is dropped. TRL's renamed keys
  (`completions/mean_length`, ...) get one canonical name.
- train/validation.csv (the validation monitor's rows): metrics.csv's rule; `train/best_adapter/best.json`
  (which validated step the kept adapter is): written with the adapter, so it parses or is absent.
- summary.json: written atomically, so it parses or is absent; read as the dict evaluation wrote.
- reference_results.yaml: a mapping with `citation` and a list `models` of {model, accuracy: {benchmark:
  percent}}; anything else raises, naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medr1.runs import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
SETTINGS = "settings.json"
VALIDATION_CSV = "validation.csv"  # in train/: one row per validated step (medr1.train.validation)
BEST_ADAPTER = "best_adapter"  # in train/: the adapter of the best validated step so far
BEST_FILE = "best.json"  # inside BEST_ADAPTER: which step it is and its validation row
# TRL's logged names for the same quantity, newest first; the first present becomes the canonical name.
METRIC_ALIASES = {
    "completion_length": ("completion_length", "completions/mean_length"),
    "clipped_ratio": ("clipped_ratio", "completions/clipped_ratio"),
    "reward_std": ("reward_std",),
    "kl": ("kl", "objective/kl"),
}


class ArtifactError(RuntimeError):
    """A run file is damaged in a way a crash does not explain; reading on would be a guess."""


# --------------------------------------------------------------------------------------------------
# JSON lines (predictions, samples)
# --------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path, valid, *, repair: bool, key=None) -> list[dict]:
    """Rows of a JSON-lines file under the one rule (see the module docstring)."""
    if not path.exists():
        return []
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = raw.split("\n")
    rows, seen, dropped = [], set(), 0
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    for i in nonempty:
        try:
            row = json.loads(lines[i])
            if not valid(row):
                raise ValueError("not a row of this file")
        except ValueError as e:
            if i == nonempty[-1]:
                log.warning("%s: dropping a truncated last line (%d bytes), left by an interrupted run",
                            path, len(lines[i]))
                dropped += 1
                continue
            raise ArtifactError(f"{path}, line {i + 1}: not a valid row ({e}). This is not the damage of an "
                                f"interrupted write; inspect the file, or rerun with force to start over.") from None
        if key is not None:
            k = key(row)
            if k in seen:
                dropped += 1
                continue
            seen.add(k)
        rows.append(row)
    if repair and (dropped or (raw and not raw.endswith("\n"))):
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def row_key(row: dict) -> tuple[str, str, int]:
    """(benchmark, id, shift): what identifies a prediction row; one question has one row per rotation.

    >>> row_key({"benchmark": "medqa", "id": 7})
    ('medqa', '7', 0)
    """
    return row["benchmark"], str(row["id"]), int(row.get("shift") or 0)


def read_predictions(path: str | Path, *, repair: bool = False) -> list[dict]:
    """Rows of a predictions.jsonl in file order, one per (benchmark, id, shift); missing file = no rows.

    Args:
        path: a predictions.jsonl file.
        repair: rewrite the file without what was dropped (the evaluation about to append does this;
            readers such as results and figures leave the file alone).

    Raises:
        ArtifactError: a line other than the last is not a prediction row.

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "p.jsonl")
    >>> _ = open(p, "w").write('{"id": 1, "benchmark": "b"}\\n{"id": 1, "benchmark": "b"}\\n{"id"')
    >>> len(read_predictions(p))
    1
    """
    return _read_jsonl(Path(path), lambda r: isinstance(r, dict) and "id" in r and "benchmark" in r,
                       repair=repair, key=row_key)


class PredictionsAppender:
    """Appends rows to predictions.jsonl, one flush + fsync per batch: a kill loses at most a batch."""

    def __init__(self, path: str | Path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def eval_predictions(run_dir: str | Path) -> dict[str, list[dict]]:
    """{label: rows} for every `eval/<label>/predictions.jsonl` of a run, "base" then "trained" then the rest."""
    eval_dir = RunDir(run_dir).eval_dir
    files = sorted(eval_dir.glob(f"*/{PREDICTIONS}")) if eval_dir.is_dir() else []
    out = {p.parent.name: read_predictions(p) for p in files}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "base", kv[0] != "trained", kv[0])))


def predictions_frame(rows: Iterable[dict]):
    """Prediction rows as a DataFrame with `benchmark`, `id` (str), `shift`, `extracted`, `rule` ("unparsed"
    where a row has neither letter nor rule), `gold`, `correct` (from the letter when absent) and `n_options`.

    >>> predictions_frame([{"id": 1, "benchmark": "b", "extracted": "A", "gold": "A", "options": {"A": 1, "B": 2}}]
    ...                   )[["extracted", "correct", "n_options"]].values.tolist()
    [['A', True, 2]]
    """
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=["benchmark", "id", "shift", "extracted", "rule", "gold", "correct", "n_options"])
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


def read_samples(path: str | Path) -> list[dict]:
    """Records of train/samples.jsonl (each with its `step`), a cut last line dropped and reported."""
    return _read_jsonl(Path(path), lambda r: isinstance(r, dict) and "step" in r, repair=False)


def truncate_samples(path: str | Path, step: int) -> int:
    """Keep the samples.jsonl records with `step <= step`, rewritten atomically (before a resume from
    checkpoint `step`, which also drops a line cut by the kill). Returns the number kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = [r for r in read_samples(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return len(kept)


# --------------------------------------------------------------------------------------------------
# summary.json
# --------------------------------------------------------------------------------------------------


def write_summary(eval_dir: str | Path, summary: dict) -> None:
    atomic_write_json(Path(eval_dir) / SUMMARY, summary)


def read_summary(path: str | Path) -> dict:
    """One summary.json (or the eval directory holding it) as written by evaluation."""
    path = Path(path)
    path = path / SUMMARY if path.is_dir() else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); summaries are written atomically, so it was "
                            f"edited or copied partly: rerun the evaluation to rewrite it") from None


def read_summaries(items: Iterable | str | Path | dict) -> list[tuple[str, dict]]:
    """(label, summary) pairs from run directories, eval directories, summary.json paths or dicts."""
    if isinstance(items, str | Path | dict):
        items = [items]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((item.get("label") or item.get("model", "?"), item))
            continue
        path = Path(item)
        if path.is_file():
            out.append((path.parent.name, read_summary(path)))
        elif (path / SUMMARY).is_file():
            out.append((path.name, read_summary(path)))
        elif RunDir(path).eval_dir.is_dir():
            out += [(s.parent.name, read_summary(s)) for s in sorted(RunDir(path).eval_dir.glob(f"*/{SUMMARY}"))]
        else:
            raise FileNotFoundError(f"{path}: neither a run directory with eval/*/summary.json, an eval "
                                    f"directory, nor a summary.json")
    return out


# --------------------------------------------------------------------------------------------------
# metrics.csv
# --------------------------------------------------------------------------------------------------


def _metric_rows(path: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or "nan"))
                except ValueError:
                    continue  # a line cut by a kill: dropped, its step is re-logged on resume
                rows[step] = row
    return rows


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """metrics.csv as dicts of floats (None for empty cells), one per step in step order.

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(p, "w").write("step,reward\\n2,0.5\\n1,0.2\\n2,0.7\\n3,")
    >>> [(r["step"], r["reward"]) for r in read_metrics(p)]
    [(1.0, 0.2), (2.0, 0.7), (3.0, None)]
    """
    rows = _metric_rows(Path(path))

    def num(v):
        try:
            return float(v) if v not in ("", None) else None
        except ValueError:
            return None

    return [{k: num(v) for k, v in rows[s].items() if k is not None} for s in sorted(rows)]


def truncate_metrics(path: str | Path, step: int, columns: Iterable[str]) -> int:
    """Keep the metrics.csv rows with `step <= step` under `columns`, rewritten atomically (before a resume
    from checkpoint `step`: later rows are re-logged). Returns the number of rows kept."""
    rows = {s: r for s, r in _metric_rows(Path(path)).items() if s <= step}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for s in sorted(rows):
        writer.writerow(rows[s])
    atomic_write_text(path, buf.getvalue())
    return len(rows)


def read_validation(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of `train/validation.csv` as numbers, `step` an int (empty list when absent); read under
    metrics.csv's rule (`read_metrics`: one row per step, a row cut by a kill dropped)."""
    return [{**row, "step": int(row["step"])} for row in read_metrics(path)]


def read_best(train_dir: str | Path) -> dict[str, Any] | None:
    """{"step", "row"} of the kept best adapter (`train/best_adapter/best.json`), or None."""
    path = Path(train_dir) / BEST_ADAPTER / BEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def metrics_frame(path: str | Path):
    """`train/metrics.csv` (or a run directory holding one) as a DataFrame, TRL's names made canonical.

    >>> import tempfile, os; d = tempfile.mkdtemp(); p = os.path.join(d, "m.csv")
    >>> _ = open(p, "w").write("step,reward,completions/mean_length\\n2,0.5,9\\n1,0.2,8\\n")
    >>> metrics_frame(p)[["step", "completion_length"]].values.tolist()
    [[1.0, 8.0], [2.0, 9.0]]
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = RunDir(path).metrics_csv if (path / "train").is_dir() else path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (no training run)")
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    df = pd.DataFrame(read_metrics(path), columns=header or None)
    for canonical, names in METRIC_ALIASES.items():
        present = [n for n in names if n in df.columns]
        if canonical not in df.columns and present:
            df = df.rename(columns={present[0]: canonical})
    return df.astype(float).reset_index(drop=True)


def read_run_params(run_dir: str | Path) -> dict:
    """The run's resolved params.yaml as a dict, {} when absent or unreadable (reports never need it)."""
    import yaml

    try:
        values = yaml.safe_load((Path(run_dir) / "params.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


# --------------------------------------------------------------------------------------------------
# reference_results.yaml
# --------------------------------------------------------------------------------------------------


def read_reference(path: str | Path) -> dict:
    """Published numbers (see params/reference_results.yaml), checked for the fields the table needs."""
    import yaml

    path = Path(path)
    try:
        ref = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(f"reference results file {path} cannot be read: {e}") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("models"), list) or "citation" not in ref:
        raise ValueError(f"{path}: expected a mapping with 'citation' and a list 'models'")
    for i, m in enumerate(ref["models"]):
        if not isinstance(m, dict) or "model" not in m or not isinstance(m.get("accuracy"), dict):
            raise ValueError(f"{path}: models[{i}] needs 'model' and an 'accuracy' mapping")
    return ref


__all__ = ["ArtifactError", "PredictionsAppender", "eval_predictions", "metrics_frame", "predictions_frame",
           "read_metrics", "read_predictions", "read_reference", "read_run_params", "read_samples", "read_summaries", "read_summary",
           "row_key", "truncate_metrics", "truncate_samples", "write_summary"]
