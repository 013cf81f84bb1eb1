"""The GPU libraries' real signatures, as the tests see them: a checker and strict fakes built from
tests/contracts/api_snapshot.json (written by scripts/api_snapshot.py from the pinned wheels' source).

Why: vLLM and Unsloth import only with a CUDA GPU, so the tests run our GPU code against fakes; a fake
that accepts any keyword let `generation_kwargs={"use_cache": True}` reach vLLM's `SamplingParams`
(review A1). Every fake here validates its call against the pinned version's signature first, so it
rejects what the real library rejects: an unknown keyword, a missing required argument, too many
positional arguments, and the few value checks the library makes at construction (VALUE_RULES, each with
the source line it comes from).

`**kwargs`: vLLM's `LLM(**kwargs)` forwards unknown keywords into `EngineArgs`, so they are checked
against EngineArgs' fields (`kwargs_into`). Unsloth's loaders also take `**kwargs` but pass them on to
transformers or drop them; a keyword we pass that is not a named parameter is refused here (stricter than
Unsloth, on purpose: such a keyword does not do what its name says).
"""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

SNAPSHOT_PATH = Path(__file__).resolve().parent / "contracts" / "api_snapshot.json"


class ContractError(TypeError):
    """A call the pinned library would reject; the message names the callable, version and keyword."""


@functools.cache
def snapshot() -> dict:
    return json.loads(SNAPSHOT_PATH.read_text())


def _version(name: str) -> str:
    package = name.split(".")[0]
    return f"{package} {snapshot()['versions'].get(package, '?')}"


def accepted(name: str) -> set[str]:
    """Every keyword `name` accepts (parameters, or init fields; plus the `kwargs_into` target's)."""
    entry = snapshot()["callables"][name]
    if "fields" in entry:
        return set(entry["fields"])
    names = set(entry["positional"]) - set(entry["positional_only"]) | set(entry["keyword_only"])
    if entry.get("kwargs_into"):
        names |= accepted(entry["kwargs_into"])
    return names


def _torch_dtype_or_none(value) -> bool:
    import torch

    return value is None or isinstance(value, torch.dtype)


# Checks the libraries make on values at construction (a wrong value fails there, after the model loaded).
# A key in ABSENT_DEFAULTS is checked at its default value when the call leaves it out.
VALUE_RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "vllm.LoRARequest": {
        "lora_int_id": (lambda v: isinstance(v, int) and v >= 1, "must be an int >= 1 (vllm/lora/request.py "
                                                                  "__post_init__)"),
        "lora_path": (lambda v: bool(v), "must not be empty (vllm/lora/request.py __post_init__ asserts)")},
    "vllm.LLM": {
        "max_lora_rank": (lambda v: v in snapshot()["vllm_max_lora_ranks"],
                          "must be one of vllm/config/lora.py MaxLoRARanks")},
    # FastModel.from_pretrained asserts a torch dtype, with no string conversion (loader.py, review B5).
    "unsloth.FastVisionModel.from_pretrained": {
        "dtype": (_torch_dtype_or_none, "must be None or a torch.dtype (unsloth/models/loader.py asserts)")},
    # FastLanguageModel converts only the strings "float16" and "bfloat16" (review B5).
    "unsloth.FastLanguageModel.from_pretrained": {
        "dtype": (lambda v: _torch_dtype_or_none(v) or v in ("float16", "bfloat16"),
                  "must be None, a torch.dtype, 'float16' or 'bfloat16' (unsloth/models/loader.py asserts)")},
}
ABSENT_DEFAULTS: dict[str, dict[str, Any]] = {"vllm.LoRARequest": {"lora_path": ""}}


def check_call(name: str, args: tuple = (), kwargs: dict | None = None) -> None:
    """Raise ContractError when the pinned `name` would reject `name(*args, **kwargs)`."""
    kwargs = dict(kwargs or {})
    entry = snapshot()["callables"][name]
    where = f"{name} ({_version(name)}, {entry['source'] if isinstance(entry['source'], str) else entry['source'][0]})"
    if "fields" in entry:
        positional, varargs = entry["fields"], False
    else:
        positional, varargs = entry["positional"], entry["varargs"]
    if len(args) > len(positional) and not varargs:
        raise ContractError(f"{where} takes at most {len(positional)} positional arguments, got {len(args)}")
    bound = dict(zip(positional, args, strict=False))
    for key in kwargs:
        if key in bound:
            raise ContractError(f"{where} got multiple values for argument {key!r}")
    unknown = sorted(set(kwargs) - accepted(name))
    if unknown:
        raise ContractError(f"{where} has no parameter {', '.join(map(repr, unknown))}: unexpected keyword "
                            f"argument {unknown[0]!r}")
    given = {**bound, **kwargs}
    missing = [r for r in entry["required"] if r not in given]
    if missing:
        raise ContractError(f"{where} is missing required argument(s) {missing}")
    given = {**ABSENT_DEFAULTS.get(name, {}), **given}
    for key, (ok, why) in VALUE_RULES.get(name, {}).items():
        if key in given and not ok(given[key]):
            raise ContractError(f"{where}: {key}={given[key]!r} {why}")


def checked(name: str, fn: Callable | None = None) -> Callable:
    """`fn` (default: return None) behind a contract check of every call against `name`."""

    def wrapper(*args, **kwargs):
        check_call(name, args, kwargs)
        return fn(*args, **kwargs) if fn is not None else None

    wrapper.contract = name
    return wrapper


# --------------------------------------------------------------------------------------------------
# Strict fakes
# --------------------------------------------------------------------------------------------------


def fake_struct(name: str) -> type:
    """A stand-in for a msgspec Struct / dataclass (`vllm.SamplingParams`, `vllm.LoRARequest`): checked on
    construction, then its fields (defaults None) readable as attributes."""
    fields = snapshot()["callables"][name]["fields"]

    class Struct:
        def __init__(self, *args, **kwargs):
            check_call(name, args, kwargs)
            for field in fields:
                setattr(self, field, None)
            for field, value in {**dict(zip(fields, args, strict=False)), **kwargs}.items():
                setattr(self, field, value)

    Struct.__name__ = Struct.__qualname__ = name.rsplit(".", 1)[-1]
    return Struct


def fake_vllm(llm_impl: Callable[..., Any], calls: list | None = None) -> dict[str, types.ModuleType]:
    """`sys.modules` entries for a strict fake vLLM: `LLM(...)` checked against `vllm.LLM`, then built by
    `llm_impl(**kwargs)`, whose `generate` is checked against `vllm.LLM.generate`; `SamplingParams` and
    `LoRARequest` checked on construction. Each call is appended to `calls` as (name, args, kwargs)."""
    calls = calls if calls is not None else []

    def make_llm(*args, **kwargs):
        check_call("vllm.LLM", args, kwargs)
        calls.append(("vllm.LLM", args, kwargs))
        engine = llm_impl(*args, **kwargs)
        generate = engine.generate

        def checked_generate(*a, **kw):
            check_call("vllm.LLM.generate", a, kw)
            calls.append(("vllm.LLM.generate", a, kw))
            return generate(*a, **kw)

        engine.generate = checked_generate
        return engine

    vllm = types.ModuleType("vllm")
    vllm.LLM = make_llm
    vllm.SamplingParams = fake_struct("vllm.SamplingParams")
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = fake_struct("vllm.LoRARequest")
    vllm.lora, lora.request = lora, request
    return {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}


def fake_unsloth(*, from_pretrained: Callable | None = None, get_peft_model: Callable | None = None,
                 vision_from_pretrained: Callable | None = None, vision_get_peft_model: Callable | None = None,
                 calls: dict | None = None) -> types.ModuleType:
    """A strict fake `unsloth` module: each method checks its call against Unsloth 2026.10.9's signature,
    records the keywords in `calls[name]`, then runs the given implementation."""
    calls = calls if calls is not None else {}

    def method(name, impl):
        def run(*args, **kwargs):
            check_call(name, args, kwargs)
            calls[name] = kwargs
            return impl(*args, **kwargs) if impl is not None else None

        return staticmethod(run)

    module = types.ModuleType("unsloth")
    module.FastLanguageModel = type("FastLanguageModel", (), {
        "from_pretrained": method("unsloth.FastLanguageModel.from_pretrained", from_pretrained),
        "get_peft_model": method("unsloth.FastLanguageModel.get_peft_model", get_peft_model)})
    module.FastVisionModel = type("FastVisionModel", (), {
        "from_pretrained": method("unsloth.FastVisionModel.from_pretrained", vision_from_pretrained),
        "get_peft_model": method("unsloth.FastVisionModel.get_peft_model", vision_get_peft_model)})
    return module


def trl_colocate_sampling_kwargs(generation_kwargs: dict | None) -> dict:
    """What TRL 1.15's colocate path hands `SamplingParams(**...)`: its own keys, updated with
    `args.generation_kwargs` (trl/generation/vllm_generation.py: `generation_kwargs.update(self.generation_kwargs)`)."""
    own = {key: None for key in snapshot()["trl_vllm"]["colocate_sampling_keys"]}
    return {**own, **(generation_kwargs or {})}
