"""Running a protocol (`medr1.task.protocols`): one model, every seed, and a summary that says what ran.

Kept apart from the protocol definitions so that reading what a protocol *is* (sets, prompt, decoding,
scorer, comparability) needs no evaluation machinery, and results and config can import it cheaply.

A sampled protocol (HuatuoGPT-o1's temperature 0.5) gives a different accuracy per seed. Their tables
report one sample; we run `eval_seeds` seeds into `seed-<s>/` and report the mean over seeds with the
seeds' standard deviation (decoding noise) beside a bootstrap interval over questions (question
sampling), so a reader can tell a difference between models from a lucky seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medr1.artifacts import read_predictions, write_summary
from medr1.config import Params, ParamsError
from medr1.data import sample_questions
from medr1.data.benchmarks import load_benchmark
from medr1.data.hub import _datasets_hub_loader, load_from_hub
from medr1.data.published import (
    load_eval_data_file,
    load_pubmedqa_huatuo,
    pubmedqa_huatuo_from_hub_rows,
    set_fingerprint,
)
from medr1.data.schema import DataError, LoadedQuestions, Question
from medr1.data.sources import resolve_data_dir
from medr1.evaluation.evaluate import EvalSettings, evaluate_model
from medr1.evaluation.scoring import score
from medr1.runs import atomic_write_json, atomic_write_text
from medr1.task.prompts import build_messages
from medr1.task.protocols import COMPARABLE, Protocol, get_protocol

log = logging.getLogger(__name__)


def _protocol(protocol: Protocol | str) -> Protocol:
    """A protocol by name (a `ParamsError` naming the known ones) or as given."""
    if not isinstance(protocol, str):
        return protocol
    try:
        return get_protocol(protocol)
    except ValueError as e:
        raise ParamsError(str(e)) from None

PROTOCOL_FILE, PROMPTS_FILE = "protocol.json", "prompts.jsonl"


def evaluate_protocol(model_spec: str, protocol: Protocol | str, benchmarks: Sequence[str], out_dir: str | Path,
                      settings: Any, *, eval_seeds: int, eval_file=None, hub: bool | None = None, hub_loader=None,
                      adapter: str | None = None, progress: bool = True, generate_fn=None) -> dict:
    """Evaluate one model under a protocol into `out_dir`; sampled protocols once per seed.

    A greedy protocol writes one evaluation (`medr1.evaluation.evaluate.evaluate_model`) into `out_dir`; a sampled one
    writes `out_dir/seed-<s>/` for `eval_seeds` seeds (settings.seed, +1, ...) and, in `out_dir/summary.json`,
    per scorer and benchmark the mean accuracy over seeds with their standard deviation, min and max, and a
    95 % bootstrap interval over questions of each question's mean correctness (the seeds' spread is the
    decoding noise; the interval is the question sampling). Both summaries carry `protocol` (the record
    of `dry_run`), from which `medr1.report.results` decides comparability.

    Args:
        settings: a `medr1.evaluation.evaluate.EvalSettings`; the protocol's own template and decoding replace its
            (`medr1.evaluation.protocol_eval.decoding`), its limit, seed, data_dir, scorers and backend are used as they are.
    """

    protocol = _protocol(protocol)
    fallback = SimpleNamespace(eval_prompt_template=settings.template, eval_temperature=settings.temperature,
                               eval_top_p=settings.top_p, eval_max_new_tokens=settings.max_new_tokens)
    dec = decoding(protocol, fallback)
    seed, limit, scorers = settings.seed, settings.limit, settings.scorers
    sets = {b: load_protocol_set(protocol, b, data_dir=settings.data_dir, eval_file=eval_file, hub=hub,
                                 hub_loader=hub_loader) for b in benchmarks}
    question_sets = {b: limited(s, limit, seed) for b, s in sets.items()}
    sampled = dec["temperature"] > 0
    seeds = [seed + i for i in range(eval_seeds)] if sampled else [seed]
    record = protocol_record(protocol, dec, sets, limit, len(seeds))
    out = Path(out_dir)
    per_seed = {}
    for s in seeds:
        per_seed[s] = evaluate_model(model_spec, list(benchmarks), out / f"seed-{s}" if sampled else out,
                                     settings.replace(**dec, seed=s), adapter=adapter, progress=progress,
                                     generate_fn=generate_fn, question_sets=question_sets)
    if not sampled:
        summary = {**per_seed[seeds[0]], "protocol": record}
    else:
        first = per_seed[seeds[0]]
        summary = {k: first[k] for k in ("model", "adapter", "template", "benchmarks", "data_hashes") if k in first}
        summary.update(settings={**first["settings"], "seed": seeds}, protocol=record,
                       seeds=seeds, n_questions=first["n_questions"],
                       scores=_seed_scores([read_predictions(out / f"seed-{s}" / "predictions.jsonl")
                                            for s in seeds], per_seed, seeds, scorers, seed))
    write_summary(out, summary)
    return summary


def evaluate_params_protocols(params: Any, run: Any, jobs: Sequence[tuple[str, str, str | None]], *,
                              progress: bool = True, generate_fn=None) -> dict[str, dict]:
    """Every protocol of `params.eval_protocol` other than `medr1`, for each (label, model, adapter) job,
    into `eval/<label>@<protocol>/`. Returns {"<label>@<protocol>": summary}."""

    settings = EvalSettings.from_params(params)
    out = {}
    for name in params.eval_protocol:
        if name == "medr1":
            continue
        for label, spec, adapter in jobs:
            out[f"{label}@{name}"] = evaluate_protocol(
                spec, name, params.eval_benchmarks, run.eval_dir / f"{label}@{name}", settings,
                eval_seeds=params.eval_seeds, eval_file=params.eval_data_file, adapter=adapter, progress=progress,
                generate_fn=generate_fn)
    return out


def protocol_cli(params: Any, args: Any, model: str, out: Path) -> int:
    """`medr1 eval --protocol NAME [--dry-run]`: print, per benchmark, whether the set is the published one.

    Args:
        params: the resolved `medr1.config.Params` (eval_benchmarks, eval_limit, seed, eval_seeds, ...).
        args: the CLI namespace (protocol, dry_run, no_hub, adapter).
        model, out: the model spec and the output directory.
    """

    benchmarks = list(params.eval_benchmarks)
    load_kw = {"eval_file": params.eval_data_file, "hub": False if args.no_hub else None}
    if args.dry_run:
        record = dry_run(args.protocol, benchmarks, out, params=params, limit=params.eval_limit, seed=params.seed,
                         eval_seeds=params.eval_seeds, split=params.eval_split, data_dir=params.data_dir, **load_kw)
    else:
        summary = evaluate_protocol(model, args.protocol, benchmarks, out, EvalSettings.from_params(params),
                                    eval_seeds=params.eval_seeds, adapter=args.adapter, **load_kw)
        record = summary["protocol"]
        for scorer, per_bench in summary["scores"].items():
            for bench, s in per_bench.items():
                acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
                ci = "" if s.get("ci_low") is None else f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
                spread = "" if s.get("seed_std") is None else f"  seeds sd {100 * s['seed_std']:.1f}"
                print(f"{bench:>16} {scorer:>7}: {acc}{ci}{spread}  n={s['n']}  dropped={s.get('n_dropped', 0)}")
    print(f"protocol {record['protocol']} v{record['version']}: template {record['template']}, temperature "
          f"{record['temperature']}, top_p {record['top_p']}, max_new_tokens {record['max_new_tokens']}, scorer "
          f"{record['scorer']}, seeds {record['eval_seeds']}")
    for bench, b in record["benchmarks"].items():
        published = "no published set" if b["published_set_size"] is None else f"published {b['published_set_size']:,}"
        verdict = COMPARABLE if b["comparable"] else f"not comparable: {b['why_not_comparable']}"
        print(f"{bench:>16}: {b['set_size']:,} questions from {b['source']} ({published}; set matches published: "
              f"{'yes' if b['set_matches_published'] else 'no'}; fingerprint {b['fingerprint']}) -> {verdict}")
    print(f"prompts.jsonl and protocol.json in {out}" if args.dry_run else f"predictions and summary in {out}")
    return 0


def _seed_scores(rows_per_seed, per_seed, seeds, scorers, seed) -> dict:
    """Mean over seeds, spread, and a bootstrap interval over questions of per-question mean correctness."""
    import numpy as np

    out: dict[str, dict] = {}
    for scorer in scorers:
        verdicts = [score(rows, scorer).rows for rows in rows_per_seed]
        out[scorer] = {}
        for bench in per_seed[seeds[0]]["scores"][scorer]:
            accs = [per_seed[s]["scores"][scorer][bench]["accuracy"] for s in seeds]
            accs = [a for a in accs if a is not None]
            by_q: dict[str, list[bool]] = {}
            for vs in verdicts:
                for v in vs:
                    if v.benchmark == bench and v.counted:
                        by_q.setdefault(v.id, []).append(bool(v.correct))
            means = np.array([sum(c) / len(c) for c in by_q.values()])
            low = high = math.nan
            if len(means):
                rng = np.random.default_rng(seed)
                boots = np.concatenate([means[rng.integers(0, len(means), (500, len(means)))].mean(axis=1)
                                        for _ in range(20)])
                low, high = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
            entries = [per_seed[s]["scores"][scorer][bench] for s in seeds]
            out[scorer][bench] = {
                "scorer": scorer, "benchmark": bench, "n": entries[0]["n"],
                "accuracy": float(np.mean(accs)) if accs else None, "ci_low": None if math.isnan(low) else low,
                "ci_high": None if math.isnan(high) else high,
                "ci_method": "bootstrap over questions of per-question mean correctness 95%",
                "seed_accuracies": accs, "seed_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "seed_min": min(accs) if accs else None, "seed_max": max(accs) if accs else None,
                "unparsed": sum(e["unparsed"] for e in entries) / len(entries),
                "n_dropped": sum(e.get("n_dropped", 0) for e in entries) / len(entries),
            }
    return out


def decoding(protocol: Protocol, params: Any = None) -> dict[str, Any]:
    """template, temperature, top_p, max_new_tokens: the protocol's own, else `params.eval_*`."""
    if params is None:

        params = Params()
    own = {"template": protocol.template, "temperature": protocol.temperature, "top_p": protocol.top_p,
           "max_new_tokens": protocol.max_new_tokens}
    fallback = {"template": params.eval_prompt_template, "temperature": params.eval_temperature,
                "top_p": params.eval_top_p, "max_new_tokens": params.eval_max_new_tokens}
    return {k: fallback[k] if v is None else v for k, v in own.items()}



@dataclass
class LoadedSet:
    """The questions of one protocol set and the record of where they came from."""

    benchmark: str
    questions: list[Question]
    source: str
    set_size: int
    fingerprint: str
    published_size: int | None
    published_fingerprint: str | None
    title: str
    tried: list[str] = field(default_factory=list)

    @property
    def matches_published(self) -> bool:
        return (self.published_size is not None and self.set_size == self.published_size
                and self.published_fingerprint in (None, self.fingerprint))

    def why_not(self, limit: int | None = None) -> str | None:
        """None when comparable with published; else the reason, for a reader ("MedMCQA: 2,816 of 4,183")."""
        name = self.title.split(" ")[0].rstrip(",")
        if self.published_size is None:
            return f"{name}: no published set under this protocol"
        if self.set_size != self.published_size:
            return f"{name}: {self.set_size:,} of {self.published_size:,} questions"
        if self.published_fingerprint not in (None, self.fingerprint):
            return f"{name}: other questions than the published set (fingerprint {self.fingerprint})"
        if limit is not None and limit < self.set_size:
            return f"{name}: --limit {limit} of {self.set_size:,} questions"
        return None

    def record(self, limit: int | None = None) -> dict[str, Any]:
        why = self.why_not(limit)
        return {"title": self.title, "source": self.source, "set_size": self.set_size,
                "published_set_size": self.published_size, "set_matches_published": self.matches_published,
                "fingerprint": self.fingerprint, "published_fingerprint": self.published_fingerprint,
                "fingerprint_checked": self.published_fingerprint is not None, "limit": limit,
                "evaluated": min(limit, self.set_size) if limit is not None else self.set_size,
                "comparable": why is None, "why_not_comparable": why, "tried": list(self.tried)}



def _hub_enabled(hub: bool | None) -> bool:
    if hub is not None:
        return hub
    return not any(os.environ.get(v, "").lower() in ("1", "true") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))



def _load_source(name: str, split: str, data_dir, hub: bool, hub_loader) -> LoadedQuestions:
    if name == "pqal-huatuo":  # PQA-L in their layout: local original files, else the hub's pqa_labeled
        root = resolve_data_dir(data_dir)
        if root is not None and (root / "pubmedqa-pqal" / "ori_pqal.json").is_file():
            return load_pubmedqa_huatuo(root / "pubmedqa-pqal")
        if not hub:
            raise DataError("no local pubmedqa-pqal/ori_pqal.json and the hub is off", path="pubmedqa-pqal")

        rows = list((hub_loader or _datasets_hub_loader)("qiaojin/PubMedQA", "pqa_labeled", "train"))
        return pubmedqa_huatuo_from_hub_rows(rows, "qiaojin/PubMedQA/pqa_labeled[train]")
    if name.startswith("hub:"):
        if not hub:
            raise DataError("hub is off (offline)", path=name)
        return load_from_hub(name[4:], split, hub_loader=hub_loader)
    if not hub:  # load_benchmark would fall back to the hub for a benchmark missing locally
        root = resolve_data_dir(data_dir)
        if root is None or not (root / name / f"{split}.jsonl").is_file():
            raise DataError("not in the local data dir and the hub is off", path=name)
    return load_benchmark(name, split, data_dir, hub_loader=hub_loader)



def load_protocol_set(protocol: Protocol | str, benchmark: str, *, split: str = "test", data_dir=None,
                      eval_file: str | os.PathLike | None = None, hub: bool | None = None,
                      hub_loader=None) -> LoadedSet:
    """The questions a protocol evaluates for `benchmark`, and whether they are the published set.

    The user's `eval_file` (their eval_data.json) is used whenever it holds the set (its size is still
    checked). Otherwise each of the set's sources is tried in order: the first that is the published set
    wins; if none is, the first that loaded is used, and its record says why it is not comparable.
    For `medr1`, or a benchmark the protocol does not define, it is simply `load_benchmark`.
    """
    protocol = _protocol(protocol)
    spec = protocol.sets.get(benchmark)
    if spec is None:
        qs = load_benchmark(benchmark, split, data_dir, hub_loader=hub_loader)
        return LoadedSet(benchmark, list(qs), f"{benchmark}:{split}", len(qs), set_fingerprint(qs), None, None,
                         benchmark)
    hub = _hub_enabled(hub)
    candidates: list[tuple[str, Callable[[], LoadedQuestions]]] = []
    if eval_file is not None:
        candidates.append((f"{eval_file} [{benchmark}]", lambda: load_eval_data_file(eval_file, benchmark)))
    for name, sp in spec.sources:
        candidates.append((f"{name}:{sp}", lambda n=name, s=sp: _load_source(n, s, data_dir, hub, hub_loader)))
    first: LoadedSet | None = None
    tried: list[str] = []
    for where, load in candidates:
        try:
            qs = load()
        except DataError as e:
            tried.append(f"{where}: {e}")
            continue
        origin = getattr(getattr(qs, "report", None), "path", None)  # the file or hub split actually read
        got = LoadedSet(benchmark, [dataclasses.replace(q, source=benchmark) for q in qs],
                        f"{where} <- {origin}" if origin and origin not in where else where, len(qs),
                        set_fingerprint(qs), spec.published_size, spec.published_fingerprint, spec.title, tried)
        if got.matches_published or eval_file is not None and where == candidates[0][0]:  # their file is their set
            return got
        tried.append(f"{where}: {got.why_not()}")
        first = first or got
    if first is None:
        raise DataError(f"{spec.title}: no source could be loaded; tried " + "; ".join(tried), path=benchmark,
                        kind="missing_file")
    log.warning("%s: not the published set (%s)", spec.title, first.why_not())
    return first



def protocol_record(protocol: Protocol, settings: Mapping[str, Any], sets: Mapping[str, LoadedSet], limit, seeds) -> dict:
    return {"protocol": protocol.name, "version": protocol.version, "description": protocol.description,
            "template": settings["template"], "temperature": settings["temperature"],
            "top_p": settings["top_p"] if settings["temperature"] > 0 else 1.0,
            "max_new_tokens": settings["max_new_tokens"], "scorer": protocol.scorer, "eval_seeds": seeds,
            "benchmarks": {b: s.record(limit) for b, s in sets.items()}}



def limited(s: LoadedSet, limit: int | None, seed: int) -> list[Question]:

    return s.questions if limit is None else sample_questions(s.questions, limit, seed)



def dry_run(protocol: Protocol | str, benchmarks: Sequence[str], out_dir: str | Path, *, params: Any = None,
            limit: int | None = None, seed: int = 0, eval_seeds: int = 3, **load_kw) -> dict:
    """Render every prompt a protocol would send, without a model.

    Writes `prompts.jsonl` (per question: id, benchmark, messages exactly as sent before the chat template)
    and `protocol.json` (decoding, scorer, and per benchmark set_size, published_set_size,
    set_matches_published, fingerprint, comparable, why_not_comparable). Returns the protocol record.
    """

    protocol = _protocol(protocol)
    settings = decoding(protocol, params)
    sets = {b: load_protocol_set(protocol, b, **load_kw) for b in benchmarks}
    lines = [json.dumps({"id": q.id, "benchmark": b, "messages": build_messages(q, settings["template"])},
                        ensure_ascii=False) + "\n" for b, s in sets.items() for q in limited(s, limit, seed)]
    record = protocol_record(protocol, settings, sets, limit, eval_seeds if settings["temperature"] > 0 else 1)
    out = Path(out_dir)
    atomic_write_text(out / PROMPTS_FILE, "".join(lines))
    atomic_write_json(out / PROTOCOL_FILE, record)
    return record


__all__ = ["evaluate_params_protocols", "evaluate_protocol", "protocol_cli"]
