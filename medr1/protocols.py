"""Evaluation protocols: named, versioned bundles of sets, prompt, decoding and scorer.

A published accuracy is a measurement under one protocol: which questions, worded how, decoded how,
scored how. Our number sits beside theirs meaningfully only when all four match, so a protocol names
them together and every evaluation records which one it ran and whether each of its sets is the
published one (size, and fingerprint where known). `medr1.results` labels a row "comparable with
published" from that record and from nothing else.

- `huatuo-o1` (v1): HuatuoGPT-o1's `evaluation/eval.py` and `scorer.py` (FreedomIntelligence/HuatuoGPT-o1,
  commit dc6e08a; read, not copied). One user message, no system prompt: "Please answer the following
  multiple-choice question:\\n{question}\\n{option_str}", option_str = "A. text" lines; temperature 0.5,
  top_p 0.9, 2,000 new tokens; their scorer (our `huatuo`). Sets as in their `eval_data.json`: MedQA-USMLE
  test (1,273, 4 options), MedMCQA validation (4,183), PubMedQA PQA-L (all 1,000, abstract inside the
  question), MMLU-Pro health + biology (1,535), GPQA medical (390; only their file has that selection).
  Sampled, so it runs `eval_seeds` seeds and reports their mean and spread beside the interval.
- `huatuo-o1-strict` (v1): the same with their `--strict_prompt` wording.
- `medr1` (v1): ours. Prompt and decoding are the run's `eval_*` params (defaults: the r1 template,
  greedy), sets are our benchmark files, `strict` scorer. It compares models of this project with one
  another; it is never comparable with published numbers, and says so.

Sets are taken from the user's copy of their `eval_data.json` when given; else from our files when
those are the published set; else from the hub; else (offline) from our files, labelled with why they
are not the published set ("MedMCQA: 2,816 of 4,183 questions").
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
from typing import Any

from medr1.config import ParamsError
from medr1.data import DataError, LoadedQuestions, Question, load_benchmark, load_from_hub, resolve_data_dir
from medr1.eval_sets import (
    load_eval_data_file,
    load_pubmedqa_huatuo,
    pubmedqa_huatuo_from_hub_rows,
    set_fingerprint,
)

log = logging.getLogger(__name__)

PROTOCOL_FILE, PROMPTS_FILE = "protocol.json", "prompts.jsonl"
COMPARABLE = "comparable with published"


@dataclass(frozen=True)
class SetSpec:
    """One evaluation set of a protocol.

    Attributes:
        title: how a reader names it ("MedMCQA validation").
        published_size: questions in the published set (None: there is no published set).
        published_fingerprint: `set_fingerprint` of the published set, where someone has computed it from
            their file (None: unknown, so only the size is checked).
        sources: `load_benchmark` (name, split) pairs tried in order; "pqal-huatuo" is PQA-L in their layout.
        decontaminate: eval-set specs (`build_training_pool`) covering the published set.
    """

    title: str
    published_size: int | None
    published_fingerprint: str | None = None
    sources: tuple[tuple[str, str], ...] = ()
    decontaminate: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A named, versioned evaluation. Fields set to None come from the run's `eval_*` params (`medr1`)."""

    name: str
    version: str
    description: str
    template: str | None
    temperature: float | None
    top_p: float | None
    max_new_tokens: int | None
    scorer: str
    sets: Mapping[str, SetSpec] = field(default_factory=dict)


_HUATUO_SETS = {
    "medqa": SetSpec("MedQA-USMLE test, 4 options", 1273, sources=(("medqa", "test"),),
                     decontaminate=("medqa:test",)),
    "medmcqa": SetSpec("MedMCQA validation", 4183, sources=(("medmcqa", "test"), ("hub:medmcqa", "validation")),
                       decontaminate=("medmcqa:validation",)),
    "pubmedqa": SetSpec("PubMedQA PQA-L, all 1,000 labeled", 1000, sources=(("pqal-huatuo", "all"),),
                        decontaminate=("pubmedqa-pqal:test", "pubmedqa-pqal:train")),
    "mmlu-pro": SetSpec("MMLU-Pro health + biology", 1535, sources=(("mmlu-pro-med", "test"), ("mmlu-pro", "test")),
                        decontaminate=("mmlu-pro-med:test",)),
    "gpqa": SetSpec("GPQA medical", 390, sources=(("gpqa", "test"),), decontaminate=("gpqa:test?",)),
}

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("huatuo-o1", "1", "HuatuoGPT-o1's published evaluation (plain prompt, sampled, their scorer)",
             "huatuo", 0.5, 0.9, 2000, "huatuo", _HUATUO_SETS),
    Protocol("huatuo-o1-strict", "1", "HuatuoGPT-o1's evaluation with their --strict_prompt",
             "huatuo_strict", 0.5, 0.9, 2000, "huatuo", _HUATUO_SETS),
    Protocol("medr1", "1", "ours: the run's eval_* params (default r1 template, greedy), strict scorer",
             None, None, None, None, "strict"),
)}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; a ParamsError listing the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ParamsError(f"unknown eval protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def decoding(protocol: Protocol, params: Any = None) -> dict[str, Any]:
    """template, temperature, top_p, max_new_tokens: the protocol's own, else `params.eval_*`."""
    if params is None:
        from medr1.config import Params

        params = Params()
    own = {"template": protocol.template, "temperature": protocol.temperature, "top_p": protocol.top_p,
           "max_new_tokens": protocol.max_new_tokens}
    fallback = {"template": params.eval_prompt_template, "temperature": params.eval_temperature,
                "top_p": params.eval_top_p, "max_new_tokens": params.eval_max_new_tokens}
    return {k: fallback[k] if v is None else v for k, v in own.items()}


def decontamination_sets(params: Any) -> list[str]:
    """`params.decontaminate_against` plus every set of every protocol in `params.eval_protocol` (and the
    user's eval file), so no question any protocol evaluates can reach training."""
    out = list(params.decontaminate_against)
    for name in params.eval_protocol:
        for bench in params.eval_benchmarks:
            spec = get_protocol(name).sets.get(bench)
            out += spec.decontaminate if spec else [f"{bench}:{params.eval_split}"]
            if spec and getattr(params, "eval_data_file", None):
                out.append(f"{params.eval_data_file}:{bench}?")
    return list(dict.fromkeys(x if ":" in x else f"{x}:test" for x in out))  # "medqa" is "medqa:test"


# --------------------------------------------------------------------------------------------------
# Sets: loading, fingerprints, comparability
# --------------------------------------------------------------------------------------------------


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
        from medr1.data import _datasets_hub_loader

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
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
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
        got = LoadedSet(benchmark, [dataclasses.replace(q, source=benchmark) for q in qs], where, len(qs),
                        set_fingerprint(qs), spec.published_size, spec.published_fingerprint, spec.title, tried)
        if got.matches_published or where == f"{eval_file} [{benchmark}]":  # their own file is their set
            return got
        tried.append(f"{where}: {got.why_not()}")
        first = first or got
    if first is None:
        raise DataError(f"{spec.title}: no source could be loaded; tried " + "; ".join(tried), path=benchmark,
                        kind="missing_file")
    log.warning("%s: not the published set (%s)", spec.title, first.why_not())
    return first


def comparability(benchmark: str, scorer: str, record: Mapping | None, reference: Mapping | None = None) -> str:
    """`COMPARABLE`, or "not comparable: <why>", for one measured row beside the published numbers.

    Args:
        benchmark, scorer: the row's.
        record: the `protocol` entry of its summary.json (None: evaluated under `medr1`, our protocol).
        reference: params/reference_results.yaml as loaded (its `protocol` and `published_sets`); None
            checks the row against the protocol's own published sets.

    >>> comparability("medqa", "strict", None, {"protocol": "huatuo-o1"})
    'not comparable: protocol medr1 (ours); the published numbers used huatuo-o1'
    """
    published = (reference or {}).get("protocol")
    if record is None:
        return "not comparable: protocol medr1 (ours)" + (f"; the published numbers used {published}" if published
                                                           else "")
    name = record.get("protocol")
    if published and name != published:
        return f"not comparable: protocol {name}; the published numbers used {published}"
    if scorer != record.get("scorer"):
        return f"not comparable: {scorer} scorer; {name} scores with {record.get('scorer')}"
    b = (record.get("benchmarks") or {}).get(benchmark)
    if b is None:
        return f"not comparable: {benchmark} is not in the protocol record"
    title = str(b.get("title") or benchmark).split(" ")[0].rstrip(",")
    ref_set = ((reference or {}).get("published_sets") or {}).get(benchmark) or {}
    size = ref_set.get("size", b.get("published_set_size"))
    fingerprint = ref_set.get("fingerprint") or b.get("published_fingerprint")
    if size is None:
        return f"not comparable: {title}: no published set"
    if b.get("set_size") != size:
        return f"not comparable: {title}: {b.get('set_size'):,} of {size:,} questions"
    if fingerprint and fingerprint != b.get("fingerprint"):
        return f"not comparable: {title}: other questions than the published set (fingerprint {b.get('fingerprint')})"
    if b.get("limit") is not None and b["limit"] < b["set_size"]:
        return f"not comparable: {title}: --limit {b['limit']} of {b['set_size']:,} questions"
    return COMPARABLE


# --------------------------------------------------------------------------------------------------
# Dry run and evaluation
# --------------------------------------------------------------------------------------------------


def _record(protocol: Protocol, settings: Mapping[str, Any], sets: Mapping[str, LoadedSet], limit, seeds) -> dict:
    return {"protocol": protocol.name, "version": protocol.version, "description": protocol.description,
            "template": settings["template"], "temperature": settings["temperature"],
            "top_p": settings["top_p"] if settings["temperature"] > 0 else 1.0,
            "max_new_tokens": settings["max_new_tokens"], "scorer": protocol.scorer, "eval_seeds": seeds,
            "benchmarks": {b: s.record(limit) for b, s in sets.items()}}


def _limited(s: LoadedSet, limit: int | None, seed: int) -> list[Question]:
    from medr1.data import sample_questions

    return s.questions if limit is None else sample_questions(s.questions, limit, seed)


def dry_run(protocol: Protocol | str, benchmarks: Sequence[str], out_dir: str | Path, *, params: Any = None,
            limit: int | None = None, seed: int = 0, eval_seeds: int = 3, **load_kw) -> dict:
    """Render every prompt a protocol would send, without a model.

    Writes `prompts.jsonl` (per question: id, benchmark, messages exactly as sent before the chat template)
    and `protocol.json` (decoding, scorer, and per benchmark set_size, published_set_size,
    set_matches_published, fingerprint, comparable, why_not_comparable). Returns the protocol record.
    """
    from medr1.prompts import build_messages
    from medr1.runs import atomic_write_json, atomic_write_text

    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    settings = decoding(protocol, params)
    sets = {b: load_protocol_set(protocol, b, **load_kw) for b in benchmarks}
    lines = [json.dumps({"id": q.id, "benchmark": b, "messages": build_messages(q, settings["template"])},
                        ensure_ascii=False) + "\n" for b, s in sets.items() for q in _limited(s, limit, seed)]
    record = _record(protocol, settings, sets, limit, eval_seeds if settings["temperature"] > 0 else 1)
    out = Path(out_dir)
    atomic_write_text(out / PROMPTS_FILE, "".join(lines))
    atomic_write_json(out / PROTOCOL_FILE, record)
    return record


def evaluate_protocol(model_spec: str, protocol: Protocol | str, benchmarks: Sequence[str], out_dir: str | Path, *,
                      params: Any = None, eval_seeds: int = 3, seed: int = 0, limit: int | None = None,
                      data_dir=None, eval_file=None, hub: bool | None = None, hub_loader=None,
                      scorers: Sequence[str] = ("strict", "huatuo"), **eval_kw) -> dict:
    """Evaluate one model under a protocol into `out_dir`; sampled protocols once per seed.

    A greedy protocol writes one evaluation (`medr1.evaluate.evaluate_model`) into `out_dir`; a sampled one
    writes `out_dir/seed-<s>/` for `eval_seeds` seeds and, in `out_dir/summary.json`, per scorer and
    benchmark the mean accuracy over seeds with their standard deviation, min and max, and a 95 %
    bootstrap interval over questions of each question's mean correctness (the seeds' spread is the
    decoding noise; the interval is the question sampling). Both summaries carry `protocol` (the record
    of `dry_run`), from which `medr1.results` decides comparability.
    """
    from medr1.evaluate import evaluate_model, read_predictions
    from medr1.runs import atomic_write_json

    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    settings = decoding(protocol, params)
    sets = {b: load_protocol_set(protocol, b, data_dir=data_dir, eval_file=eval_file, hub=hub, hub_loader=hub_loader)
            for b in benchmarks}
    question_sets = {b: _limited(s, limit, seed) for b, s in sets.items()}
    sampled = settings["temperature"] > 0
    seeds = [seed + i for i in range(eval_seeds)] if sampled else [seed]
    record = _record(protocol, settings, sets, limit, len(seeds))
    out = Path(out_dir)
    per_seed = {}
    for s in seeds:
        per_seed[s] = evaluate_model(model_spec, list(benchmarks), out / f"seed-{s}" if sampled else out,
                                     template=settings["template"], temperature=settings["temperature"],
                                     top_p=settings["top_p"], max_new_tokens=settings["max_new_tokens"], seed=s,
                                     data_dir=data_dir, scorers=scorers, question_sets=question_sets, **eval_kw)
    if not sampled:
        summary = {**per_seed[seeds[0]], "protocol": record}
    else:
        first = per_seed[seeds[0]]
        summary = {k: first[k] for k in ("model", "adapter", "template", "benchmarks", "data_hashes") if k in first}
        summary.update(settings={**first["settings"], "seed": seeds}, protocol=record,
                       seeds=seeds, n_questions=first["n_questions"],
                       scores=_seed_scores([read_predictions(out / f"seed-{s}" / "predictions.jsonl")
                                            for s in seeds], per_seed, seeds, scorers, seed))
    atomic_write_json(out / "summary.json", summary)
    return summary


def evaluate_params_protocols(params: Any, run: Any, jobs: Sequence[tuple[str, str, str | None]], *,
                              progress: bool = True, generate_fn=None) -> dict[str, dict]:
    """Every protocol of `params.eval_protocol` other than `medr1`, for each (label, model, adapter) job,
    into `eval/<label>@<protocol>/`. Returns {"<label>@<protocol>": summary}."""
    out = {}
    for name in params.eval_protocol:
        if name == "medr1":
            continue
        for label, spec, adapter in jobs:
            out[f"{label}@{name}"] = evaluate_protocol(
                spec, name, params.eval_benchmarks, run.eval_dir / f"{label}@{name}", params=params,
                eval_seeds=params.eval_seeds, seed=params.seed, limit=params.eval_limit, data_dir=params.data_dir,
                eval_file=params.eval_data_file, scorers=params.eval_scorers, adapter=adapter,
                batch_size=params.eval_batch_size, backend=params.eval_backend, device=params.device,
                torch_dtype=params.torch_dtype, trust_remote_code=params.trust_remote_code, resume=params.resume,
                force=params.force, progress=progress, generate_fn=generate_fn)
    return out


def protocol_cli(args) -> int:
    """`medr1 eval --protocol NAME [--dry-run]`: print, per benchmark, whether the set is the published one."""
    from types import SimpleNamespace

    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    params = SimpleNamespace(eval_prompt_template=args.template, eval_temperature=args.temperature,
                             eval_top_p=args.top_p, eval_max_new_tokens=args.max_new_tokens)
    load_kw = {"data_dir": args.data_dir, "eval_file": args.eval_file, "hub": False if args.no_hub else None}
    if args.dry_run:
        record = dry_run(args.protocol, benchmarks, args.out, params=params, limit=args.limit, seed=args.seed,
                         eval_seeds=args.seeds, split=args.split, **load_kw)
    else:
        if not args.model:
            raise ParamsError("--model is required (unless --dry-run)")
        summary = evaluate_protocol(args.model, args.protocol, benchmarks, args.out, params=params,
                                    eval_seeds=args.seeds, seed=args.seed, limit=args.limit,
                                    scorers=[s.strip() for s in args.scorers.split(",") if s.strip()],
                                    adapter=args.adapter, batch_size=args.batch_size, backend=args.backend,
                                    force=args.force, **load_kw)
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
    print(f"{'prompts.jsonl and ' if args.dry_run else ''}protocol.json in {args.out}" if args.dry_run
          else f"predictions and summary in {args.out}")
    return 0


def _seed_scores(rows_per_seed, per_seed, seeds, scorers, seed) -> dict:
    """Mean over seeds, spread, and a bootstrap interval over questions of per-question mean correctness."""
    import numpy as np

    from medr1.scoring import score

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


__all__ = ["COMPARABLE", "PROTOCOLS", "LoadedSet", "Protocol", "SetSpec", "comparability", "decoding", "decontamination_sets",
           "dry_run", "evaluate_params_protocols", "evaluate_protocol", "get_protocol", "load_protocol_set",
           "protocol_cli"]
