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

Running a protocol (seeds, the summary) is `medr1.protocol_eval`; this module only says what one is.

Sets are taken from the user's copy of their `eval_data.json` when given; else from our files when
those are the published set; else from the hub; else (offline) from our files, labelled with why they
are not the published set ("MedMCQA: 2,816 of 4,183 questions").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1.config import ParamsError
from medr1.data import (
    FIT_BENCHMARK,
    DataError,
    LoadedQuestions,
    Question,
    load_benchmark,
    load_from_hub,
    resolve_data_dir,
)
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
            if bench == FIT_BENCHMARK:  # the fit check's set is the training pool itself
                continue
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
        from medr1.data.hub import _datasets_hub_loader

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


def protocol_record(protocol: Protocol, settings: Mapping[str, Any], sets: Mapping[str, LoadedSet], limit, seeds) -> dict:
    return {"protocol": protocol.name, "version": protocol.version, "description": protocol.description,
            "template": settings["template"], "temperature": settings["temperature"],
            "top_p": settings["top_p"] if settings["temperature"] > 0 else 1.0,
            "max_new_tokens": settings["max_new_tokens"], "scorer": protocol.scorer, "eval_seeds": seeds,
            "benchmarks": {b: s.record(limit) for b, s in sets.items()}}


def limited(s: LoadedSet, limit: int | None, seed: int) -> list[Question]:
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
                        ensure_ascii=False) + "\n" for b, s in sets.items() for q in limited(s, limit, seed)]
    record = protocol_record(protocol, settings, sets, limit, eval_seeds if settings["temperature"] > 0 else 1)
    out = Path(out_dir)
    atomic_write_text(out / PROMPTS_FILE, "".join(lines))
    atomic_write_json(out / PROTOCOL_FILE, record)
    return record


__all__ = ["COMPARABLE", "PROTOCOLS", "LoadedSet", "Protocol", "SetSpec", "comparability", "decoding",
           "decontamination_sets", "dry_run", "get_protocol", "load_protocol_set"]
