"""Evaluation protocols: named, versioned bundles of sets, prompt, decoding and scorer.

A published accuracy is a measurement under one protocol: which questions, worded how, decoded how,
scored how. Our number sits beside theirs meaningfully only when all four match, so a protocol names
them together and every evaluation records which one it ran and whether each of its sets is the
published one (size, and fingerprint where known). `medr1.report.results` labels a row "comparable with
published" from that record and from nothing else.

- `huatuo-o1` (v1): HuatuoGPT-o1's `evaluation/eval.py` and `scorer.py` (FreedomIntelligence/HuatuoGPT-o1,
  commit dc6e08a; read, not copied). One user message, no system prompt: "Please answer the following
  multiple-choice question:\\n{question}\\n{option_str}", option_str = "A. text" lines; temperature 0.5,
  top_p 0.9, 2,000 new tokens; their scorer (our `huatuo`). Sets as in their `eval_data.json`: MedQA-USMLE
  test (1,273, 4 options), MedMCQA validation (4,183), PubMedQA PQA-L (all 1,000, abstract inside the
  question), MMLU-Pro health + biology (1,535), GPQA medical (390; only their file has that selection).
  Sampled, so it runs `eval_seeds` seeds and reports their mean and spread beside the interval.
  Each question is asked once, as written (no option rotation), with one sample; a flag asking otherwise is
  refused (`medr1 eval`), and a record that asked otherwise is never "comparable" (`comparability`).
  Decoding is temperature and top_p and nothing else: their eval.py sends only temperature, top_p and
  max_tokens to SGLang's /v1/completions, whose request defaults are top_k -1, min_p 0, repetition penalty
  1.0 (sglang 0.4.1 `srt/openai_api/protocol.py:166-176`), so no model generation_config applies there, nor
  here (`medr1.models.base.sampling_record`).
  Tokens: their eval.py renders the chat template into a string with `bos_token` (eval.py:63) and sends the
  string; the server tokenizes it again with `tokenizer.encode(text)`, special tokens on (sglang 0.4.0 -
  0.4.1.post3 `srt/managers/tokenizer_manager.py`, `input_ids = self.tokenizer.encode(input_text)`), so a
  Llama-3 prompt starts with <|begin_of_text|> twice (Qwen2.5 adds no BOS: unaffected). They pin no SGLang
  version (requirements.txt pins vllm 0.6.4, which SGLang 0.4.0-0.4.1.post3 require); every version of that
  window tokenizes this way, so `add_special_tokens` reproduces it, and prompts.jsonl / predictions.jsonl
  record each prompt's first token ids. The effect on accuracy is unmeasured here (no GPU run yet).
  "No system prompt" is about the messages: their render and ours both include the chat template's own
  default system block (Qwen2.5's "You are Qwen...", Llama-3.1's "Cutting Knowledge Date...").
- `huatuo-o1-strict` (v1): the same with their `--strict_prompt` wording.
- `medr1` (v1): ours. Prompt and decoding are the run's `eval_*` params (defaults: the r1 template,
  greedy), sets are our benchmark files, `strict` scorer. It compares models of this project with one
  another; it is never comparable with published numbers, and says so.
- `medr1-sampled` (v1): `medr1` with 8 samples per question (temperature 0.6, top_p 0.95), for pass@1..8.

Running a protocol (seeds, the summary) is `medr1.evaluation.protocol_eval`; this module only says what one is.

Sets are taken from the user's copy of their `eval_data.json` when given; else from our files when
those are the published set; else from the hub; else (offline) from our files, labelled with why they
are not the published set ("MedMCQA: 2,816 of 4,183 questions").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medr1.data import FIT_BENCHMARK
from medr1.models.base import sampling_record

log = logging.getLogger(__name__)

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
    """A named, versioned evaluation. Fields set to None come from the run's `eval_*` params (`medr1`).

    `permutations` and `num_samples` are how often each question is asked: a published protocol asks it
    once, as written (no option rotation), and takes one sample, so K rotations or majority voting over
    samples (+9.7 points on a simulated model) can never pass for its number. `add_special_tokens`: whether
    the chat-rendered prompt is tokenized with the tokenizer's special tokens again (`eval_add_special_tokens`).
    """

    name: str
    version: str
    description: str
    template: str | None
    temperature: float | None
    top_p: float | None
    max_new_tokens: int | None
    scorer: str
    sets: Mapping[str, SetSpec] = field(default_factory=dict)
    permutations: int | None = None
    num_samples: int | None = None
    add_special_tokens: bool | None = None


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
             "huatuo", 0.5, 0.9, 2000, "huatuo", _HUATUO_SETS, permutations=1, num_samples=1,
             add_special_tokens=True),
    Protocol("huatuo-o1-strict", "1", "HuatuoGPT-o1's evaluation with their --strict_prompt",
             "huatuo_strict", 0.5, 0.9, 2000, "huatuo", _HUATUO_SETS, permutations=1, num_samples=1,
             add_special_tokens=True),
    Protocol("medr1", "1", "ours: the run's eval_* params (default r1 template, greedy), strict scorer",
             None, None, None, None, "strict"),
    # pass@k (issue 26; Yue et al. 2025: RL often wins at pass@1 and loses at large k): the medr1 prompt and
    # sets, 8 samples per question at temperature 0.6, top_p 0.95 (the sampling DeepSeek-R1 reports pass@1
    # with), strict scorer; summary.json's pass_at_k holds pass@1..8.
    Protocol("medr1-sampled", "1", "ours, sampled: the run's eval template and sets, 8 samples per question at "
             "temperature 0.6, top_p 0.95, strict scorer; pass@1..8", None, 0.6, 0.95, None, "strict",
             num_samples=8),
)}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; a ValueError listing the known ones otherwise.

    A ValueError (as `prompts.get_template` raises), not `config.ParamsError`: `config` validates names
    against this registry, so the registry cannot import `config`; callers above it convert.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown eval protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# Protocol field -> the `eval_*` param it replaces (and the `medr1 eval` flag that sets that param).
FIXED_BY_PROTOCOL = {"template": "eval_prompt_template", "temperature": "eval_temperature", "top_p": "eval_top_p",
                     "max_new_tokens": "eval_max_new_tokens", "permutations": "eval_permutations",
                     "num_samples": "eval_num_samples", "add_special_tokens": "eval_add_special_tokens"}


def fixed_settings(protocol: Protocol | str) -> list[str]:
    """The `decoding` keys a protocol fixes (a flag setting one of them is refused under it)."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    return [k for k in FIXED_BY_PROTOCOL if getattr(protocol, k) is not None]


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
                out.append(f"{params.eval_data_file}:{bench}")  # evaluation reads it or stops, so must this
    return list(dict.fromkeys(x if ":" in x else f"{x}:test" for x in out))  # "medqa" is "medqa:test"


# --------------------------------------------------------------------------------------------------
# Sets: loading, fingerprints, comparability
# --------------------------------------------------------------------------------------------------


def _asked_otherwise(record: Mapping) -> str | None:
    """Why a protocol record did not ask its questions the published way (once, as written, one sample, with
    the protocol's decoding and nothing else), or None."""
    protocol = PROTOCOLS.get(record.get("protocol"))
    if protocol is None or protocol.permutations is None:
        return f"protocol {record.get('protocol')} has no published way of asking"
    for key, what in (("permutations", "option orders per question"), ("num_samples", "samples per question")):
        value = record.get(key)
        if value is None:
            return f"{what} not recorded"
        if value != getattr(protocol, key):
            return f"{value} {what}; {protocol.name} asks each question once, as written, with one sample"
    if record.get("add_special_tokens") != protocol.add_special_tokens:
        return f"prompt tokens not made as {protocol.name}'s server made them (add_special_tokens)"
    wanted = sampling_record(protocol.temperature, protocol.top_p)
    if record.get("sampling") != wanted:
        return (f"decoding {record.get('sampling')} is not {protocol.name}'s {wanted}" if record.get("sampling")
                else "the effective sampling settings are not recorded")
    return None


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
    if why := _asked_otherwise(record):
        return f"not comparable: {why}"
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


__all__ = ["COMPARABLE", "FIXED_BY_PROTOCOL", "PROTOCOLS", "Protocol", "SetSpec", "comparability", "decontamination_sets",
           "fixed_settings", "get_protocol"]
