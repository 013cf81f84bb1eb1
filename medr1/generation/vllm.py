"""The vLLM path: engine availability, the process's engine, request settings, and text and image generation.

vLLM runs only with a CUDA GPU and the `gpu` extra; everything here imports it inside functions, so the
CPU stack imports this module freely. `generation.backends` chooses this path; this module never imports
the dispatcher (it has its own logger), which is what keeps the generation package free of circles.

Engines: starting one takes minutes and reserves a share of the GPU up front, and a paper recipe's
evaluation asks for the same base model eight times (base and trained, two protocols, three seeds). So a
process holds one engine (`vllm_engine`), reused while the base model and engine settings stay the same;
adapters ride on each request (`LoRARequest`, one id per adapter file), not on a new engine. Inside
`vllm_session` the engine lives until the outermost session ends; a call outside any session shuts its
engine down when it returns. Shutting down is explicit (vLLM frees an engine only by GC and finalizers,
which do not wait, so the next engine's free-memory check could fail).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1.data.images import MAX_IMAGES
from medr1.generation.hf import PROMPT_HEAD, PROMPT_TOO_LONG, Generation, encode_prompts
from medr1.generation.vision import _images_of
from medr1.models.base import processor_source, sampling_record
from medr1.models.load import resolve_model_path
from medr1.models.vision import image_pixel_bounds, load_processor, resolve_vision_path

log = logging.getLogger(__name__)

VLLM_HINT = "vLLM needs a CUDA GPU and `pip install -e .[gpu]`"



def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()



def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None



def require_vllm() -> None:
    if not cuda_available():
        raise RuntimeError(f"{VLLM_HINT}: no CUDA GPU is available here. Use backend 'hf' (or 'auto').")
    if not vllm_available():
        raise RuntimeError(f"{VLLM_HINT}: the vllm package is not installed.")



# --------------------------------------------------------------------------------------------------
# vLLM engines: one per process, reused per base model, shut down when the evaluation ends
# --------------------------------------------------------------------------------------------------

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py:27 (0.31): MaxLoRARanks


@dataclass
class _Engines:
    """This process's vLLM state: the live engine (at most one: each reserves its GPU share up front)."""

    llm: Any = None
    key: tuple | None = None
    lora_rank: int = 0  # the engine's max_lora_rank; 0: built without LoRA
    depth: int = 0  # open vllm_session()s
    lora_hints: dict[str, int] = field(default_factory=dict)  # base spec -> adapter rank a session will ask for
    adapter_ids: dict[tuple, int] = field(default_factory=dict)  # (adapter dir, weights mtime) -> lora_int_id


_ENGINES = _Engines()


def adapter_rank(adapter: str | os.PathLike) -> int:
    """The largest LoRA rank in an adapter directory (`r`, or any `rank_pattern` entry)."""
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([int(cfg.get("r") or 0), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())])


def vllm_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds `rank` (it takes only `VLLM_LORA_RANKS`).

    >>> vllm_lora_rank(16), vllm_lora_rank(48)
    (16, 64)
    """
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")


@contextlib.contextmanager
def vllm_session(jobs: Iterable[tuple[str, str | None]] = ()):
    """Keep this process's vLLM engine across the evaluations inside; shut it down when the outermost
    session ends (also on error). `jobs`: the (base model spec, adapter or None) pairs the session will
    evaluate, so that a base whose adapter comes later gets LoRA from its first engine instead of a rebuild.
    Costs nothing when no engine is ever built (hf backend, CPU)."""
    for spec, adapter in jobs:
        if adapter is not None and (Path(adapter) / "adapter_config.json").is_file():
            _ENGINES.lora_hints[spec] = max(_ENGINES.lora_hints.get(spec, 0), adapter_rank(adapter))
    _ENGINES.depth += 1
    try:
        yield
    finally:
        _ENGINES.depth -= 1
        if _ENGINES.depth == 0:
            _ENGINES.lora_hints.clear()
            shutdown_vllm_engine()


def vllm_engine(model_spec: str, *, adapter: str | None = None, seed: int = 0, **engine_kwargs):
    """This process's `vllm.LLM` for `model_spec`: the live one when the base and `engine_kwargs` match and
    it can serve `adapter`'s rank, else a new one after shutting the old one down. LoRA is on when
    `adapter` or the session's jobs need it (vLLM refuses LoRA on models without LoRA support, so a
    base-only evaluation never asks for it). The seed is the engine's default; each request carries its own.
    """
    require_vllm()
    from vllm import LLM  # noqa: I001  (lazy: importing vllm initialises CUDA)

    need = adapter_rank(adapter) if adapter is not None else 0
    rank = max(need, _ENGINES.lora_hints.get(model_spec, 0))
    key = (model_spec, tuple(sorted((k, repr(v)) for k, v in engine_kwargs.items())))
    if _ENGINES.llm is not None and _ENGINES.key == key and _ENGINES.lora_rank >= need:
        return _ENGINES.llm
    if _ENGINES.llm is not None:
        log.info("vLLM: shutting down the engine of %s to start one for %s%s", _ENGINES.key[0], model_spec,
                 " with LoRA" if rank else "")
        shutdown_vllm_engine()
    lora = {"enable_lora": True, "max_lora_rank": vllm_lora_rank(rank)} if rank else {}
    _ENGINES.llm = LLM(model=resolve_model_path(model_spec), seed=seed, **lora, **engine_kwargs)
    _ENGINES.key, _ENGINES.lora_rank = key, lora.get("max_lora_rank", 0)
    return _ENGINES.llm


def shutdown_vllm_engine() -> bool:
    """Shut this process's vLLM engine down and free its GPU memory now; False when none was live.

    vLLM 0.31's `LLM` has no `shutdown`; its engine-core client does (vllm/v1/engine/core_client.py:391);
    newer vLLMs add `LLM.shutdown`, used when present."""
    llm, _ENGINES.llm, _ENGINES.key, _ENGINES.lora_rank = _ENGINES.llm, None, None, 0
    if llm is None:
        return False
    if callable(getattr(llm, "shutdown", None)):
        llm.shutdown()
    else:
        llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()
    return True


def lora_request(adapter: str | os.PathLike | None):
    """vLLM's `LoRARequest` for an adapter directory (None without one). vLLM caches adapters by
    `lora_int_id` and compares requests by `lora_name` (vllm/lora/request.py), so each adapter directory,
    and each rewrite of its weights, gets its own id and name: a stale adapter is never served."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    path = Path(adapter).resolve()
    weights = path / "adapter_model.safetensors"
    key = (str(path), weights.stat().st_mtime_ns if weights.is_file() else 0)
    lora_id = _ENGINES.adapter_ids.setdefault(key, len(_ENGINES.adapter_ids) + 1)
    return LoRARequest(lora_name=f"{path.name}-{lora_id}", lora_int_id=lora_id, lora_path=str(path))


def vllm_request_settings(*, num_samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                          adapter: str | os.PathLike | None):
    """vLLM's `SamplingParams` for our decoding settings (top_p only when sampling) and the `LoRARequest`
    of an adapter (None without one); shared by text and vision generation. Every other sampling control is
    set to its no-op explicitly (`medr1.models.base.sampling_record`), whatever defaults a vLLM version or the
    model's generation_config would bring."""
    from vllm import SamplingParams

    rec = sampling_record(temperature, top_p)
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=rec["top_p"], max_tokens=max_new_tokens,
                            seed=seed, top_k=-1, min_p=rec["min_p"], repetition_penalty=rec["repetition_penalty"],
                            presence_penalty=rec["presence_penalty"], frequency_penalty=rec["frequency_penalty"])
    return params, lora_request(adapter)


def generate_vllm(
    model_spec: str,
    prompts: Sequence[list[dict] | str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    adapter: str | None = None,
    torch_dtype: str = "auto",
    trust_remote_code: bool = False,
    gpu_memory_utilization: float = 0.85,
    on_batch: Callable[[list[Generation]], None] | None = None,
    llm=None,
    add_special_tokens: bool = False,
) -> list[Generation]:
    """Generate with vLLM on a CUDA GPU (continuous batching; LoRA adapters via `LoRARequest`).

    vLLM schedules all prompts itself, so results arrive at the end and `on_batch` is called once.
    Prompts longer than the context are reported like the HF path (finish_reason "prompt_too_long").

    Args:
        model_spec: hub id, local path or embedded spec of the base model.
        adapter: LoRA adapter directory applied to every prompt.
        llm: an existing `vllm.LLM` to use (the caller's to shut down); default: this process's engine
            (`vllm_engine`), shut down on return unless a `vllm_session` is open.
        Other arguments as in `generate`.

    Raises:
        RuntimeError: without a CUDA GPU or without vLLM installed.
    """
    require_vllm()
    with vllm_session():
        if llm is None:
            llm = vllm_engine(model_spec, adapter=adapter, seed=seed, dtype=torch_dtype,
                              trust_remote_code=trust_remote_code, gpu_memory_utilization=gpu_memory_utilization)
        tokenizer = llm.get_tokenizer()
        ids = encode_prompts(tokenizer, prompts, add_special_tokens=add_special_tokens)
        ctx = llm.llm_engine.model_config.max_model_len
        keep = [i for i, r in enumerate(ids) if len(r) + max_new_tokens <= ctx]
        params, lora = vllm_request_settings(num_samples=num_samples, temperature=temperature, top_p=top_p,
                                             max_new_tokens=max_new_tokens, seed=seed, adapter=adapter)
        start = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": ids[i]} for i in keep], params, lora_request=lora)
        latency = time.perf_counter() - start
    results = [Generation(i, [""] * num_samples, len(ids[i]), [0] * num_samples, [PROMPT_TOO_LONG] * num_samples, 0.0,
                          ids[i][:PROMPT_HEAD]) for i in range(len(ids))]
    for i, out in zip(keep, outputs, strict=True):
        results[i] = Generation(i, [o.text for o in out.outputs], len(ids[i]), [len(o.token_ids) for o in out.outputs],
                                ["length" if o.finish_reason == "length" else "stop" for o in out.outputs], latency,
                                ids[i][:PROMPT_HEAD])
    if len(keep) < len(ids):
        log.warning("skipped %d prompt(s) longer than the model context (%d) minus max_new_tokens", len(ids) - len(keep),
                    ctx)
    if on_batch:
        on_batch(results)
    return results


VLLM_CHUNK = 256  # prompts per vLLM call: enough to keep its batches full, images decoded a chunk at a time


def generate_vision_vllm(model_spec: str, prompts: Sequence[list[dict]], *, max_new_tokens: int,
                         temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, seed: int = 0,
                         adapter: str | None = None, torch_dtype: str = "auto",
                         trust_remote_code: bool = False, gpu_memory_utilization: float = 0.85,
                         image_max_pixels: int | None = None, chunk_size: int = VLLM_CHUNK,
                         on_batch: Callable[[list[Generation]], None] | None = None) -> list[Generation]:
    """vLLM generation with images (CUDA only; unmeasured: no GPU where this was written).

    The chat template and the image size come from our processor (`medr1.models.vision.load_processor`,
    capped at `image_max_pixels`); the engine gets the same size bounds (`image_pixel_bounds`), so vLLM sees
    each image at the resolution training and the HF path use. Images go in as `multi_modal_data`, at most
    `medr1.data.images.MAX_IMAGES` per prompt. Prompts run `chunk_size` at a time (images decoded per chunk,
    `on_batch` called per chunk). A prompt whose tokens (image tokens counted by the processor) plus
    `max_new_tokens` exceed the engine's context comes back as "prompt_too_long", like the text path,
    instead of vLLM failing the whole call on it.
    """
    require_vllm()
    path = resolve_vision_path(model_spec)
    processor = load_processor(processor_source(path, adapter), image_max_pixels=image_max_pixels,
                               trust_remote_code=trust_remote_code)
    results: list[Generation | None] = [None] * len(prompts)
    with vllm_session():
        llm = vllm_engine(model_spec, adapter=adapter, seed=seed, dtype=torch_dtype,
                          trust_remote_code=trust_remote_code, gpu_memory_utilization=gpu_memory_utilization,
                          limit_mm_per_prompt={"image": MAX_IMAGES},
                          mm_processor_kwargs=image_pixel_bounds(processor))
        ctx = llm.llm_engine.model_config.max_model_len
        params, lora = vllm_request_settings(num_samples=num_samples, temperature=temperature, top_p=top_p,
                                             max_new_tokens=max_new_tokens, seed=seed, adapter=adapter)
        for first in range(0, len(prompts), chunk_size):
            chunk, requests, keep = range(first, min(first + chunk_size, len(prompts))), [], []
            for i in chunk:
                text = processor.apply_chat_template(list(prompts[i]), add_generation_prompt=True, tokenize=False)
                images = _images_of(prompts[i])
                n_tokens = len(processor(text=[text], images=images or None)["input_ids"][0])
                if n_tokens + max_new_tokens > ctx:
                    results[i] = Generation(i, [""] * num_samples, n_tokens, [0] * num_samples,
                                            [PROMPT_TOO_LONG] * num_samples, 0.0)
                    continue
                keep.append((i, n_tokens))
                requests.append({"prompt": text, "multi_modal_data": {"image": images}})
            start = time.perf_counter()
            outputs = llm.generate(requests, params, lora_request=lora) if requests else []
            latency = time.perf_counter() - start
            for (i, n_tokens), out in zip(keep, outputs, strict=True):
                results[i] = Generation(i, [o.text for o in out.outputs], len(out.prompt_token_ids or []) or n_tokens,
                                        [len(o.token_ids) for o in out.outputs],
                                        ["length" if o.finish_reason == "length" else "stop" for o in out.outputs],
                                        latency)
            if len(keep) < len(chunk):
                log.warning("skipped %d prompt(s) longer than the model context (%d) minus max_new_tokens",
                            len(chunk) - len(keep), ctx)
            if on_batch:
                on_batch([results[i] for i in chunk])
    return results  # type: ignore[return-value]
