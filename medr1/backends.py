"""Generation backends: which one runs an evaluation (HF on CPU, vLLM on a CUDA GPU), the vLLM path, and
the generate functions evaluation calls, each loading its model on first use.

`pick_backend("auto")` chooses vLLM only when CUDA and vLLM are both there; asking for vLLM without them
raises, so a GPU recipe never silently falls back to a 50x slower path. vLLM is imported lazily so that
CPU machines never import it. vLLM schedules its own batches (continuous batching), so the evaluation
batch size does not apply there; `vllm_generate_fn` says so once in the log instead of ignoring it silently.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from medr1.generation import PROMPT_HEAD, PROMPT_TOO_LONG, Generation, encode_prompts
from medr1.protocols import sampling_record

log = logging.getLogger(__name__)

VLLM_HINT = "vLLM needs a CUDA GPU and `pip install -e .[gpu]`"
GenerateFn = Callable[..., list]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def pick_backend(backend: str = "auto") -> str:
    """"vllm" or "hf". auto picks vllm only with a CUDA GPU and vLLM installed; asking for vllm without
    them raises, so a GPU recipe never silently falls back to a 50x slower path.

    >>> pick_backend("hf")
    'hf'
    """
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"backend must be auto, hf or vllm, got {backend!r}")
    if backend == "auto":
        return "vllm" if cuda_available() and vllm_available() else "hf"
    if backend == "vllm":
        require_vllm()
    return backend


def require_vllm() -> None:
    if not cuda_available():
        raise RuntimeError(f"{VLLM_HINT}: no CUDA GPU is available here. Use backend 'hf' (or 'auto').")
    if not vllm_available():
        raise RuntimeError(f"{VLLM_HINT}: the vllm package is not installed.")




def vllm_request_settings(*, num_samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                          adapter: str | os.PathLike | None):
    """vLLM's `SamplingParams` for our decoding settings (top_p only when sampling) and the `LoRARequest`
    of an adapter (None without one); shared by text and vision generation. Every other sampling control is
    set to its no-op explicitly (`medr1.protocols.sampling_record`), whatever defaults a vLLM version or the
    model's generation_config would bring."""
    from vllm import SamplingParams

    rec = sampling_record(temperature, top_p)
    params = SamplingParams(n=num_samples, temperature=temperature, top_p=rec["top_p"], max_tokens=max_new_tokens,
                            seed=seed, top_k=-1, min_p=rec["min_p"], repetition_penalty=rec["repetition_penalty"],
                            presence_penalty=rec["presence_penalty"], frequency_penalty=rec["frequency_penalty"])
    if adapter is None:
        return params, None
    from vllm.lora.request import LoRARequest

    return params, LoRARequest("adapter", 1, str(adapter))


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
    lora_rank: int = 64,
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
        llm: an existing `vllm.LLM` to reuse (loading one takes a minute).
        Other arguments as in `generate`.

    Raises:
        RuntimeError: without a CUDA GPU or without vLLM installed.
    """
    require_vllm()
    from vllm import LLM  # noqa: I001  (lazy: importing vllm initialises CUDA)

    from medr1.models import resolve_model_path

    if llm is None:
        llm = LLM(model=resolve_model_path(model_spec), dtype=torch_dtype, seed=seed, enable_lora=adapter is not None,
                  max_lora_rank=lora_rank, trust_remote_code=trust_remote_code,
                  gpu_memory_utilization=gpu_memory_utilization)
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


def hf_generate_fn(model_spec: str, settings, *, adapter: str | None = None) -> GenerateFn:
    """A generate function over an HF model (text, or vision through its processor), loaded on first call so
    that a fully resumed evaluation loads nothing. `settings`: a `medr1.evaluate.EvalSettings`."""
    from medr1.generation import generate
    from medr1.models import load_model

    loaded: dict[str, Any] = {}

    def fn(prompts, **kwargs):
        if not loaded:
            # Merging folds LoRA into the weights: the same outputs up to float rounding, faster decoding.
            loaded["model"], loaded["tok"] = load_model(model_spec, adapter=adapter, device=settings.device,
                                                        torch_dtype=settings.torch_dtype,
                                                        trust_remote_code=settings.trust_remote_code,
                                                        merge_adapter=adapter is not None)
        from medr1.vision import is_processor

        if is_processor(loaded["tok"]):  # a vision-language model: images through its processor
            from medr1.vision_eval import generate_vision

            return generate_vision(loaded["model"], loaded["tok"], prompts, **kwargs)
        return generate(loaded["model"], loaded["tok"], prompts, decode=settings.decode, **kwargs)

    return fn


def vllm_generate_fn(model_spec: str, settings, *, adapter: str | None = None) -> GenerateFn:
    """A generate function over vLLM (text or vision). vLLM batches continuously on its own, so the batch
    size is dropped here, with one log line saying so."""
    kw = {"adapter": adapter, "torch_dtype": settings.torch_dtype, "trust_remote_code": settings.trust_remote_code}

    def fn(prompts, *, batch_size, **kwargs):
        log.info("vllm backend: eval_batch_size (%d) does not apply, vLLM schedules its own batches "
                 "(continuous batching)", batch_size)
        from medr1.vision import is_vision_spec

        if is_vision_spec(model_spec):
            from medr1.vision_eval import generate_vision_vllm

            return generate_vision_vllm(model_spec, prompts, **kw, **kwargs)
        return generate_vllm(model_spec, prompts, **kw, **kwargs)

    return fn


def generate_fn_for(model_spec: str, settings, backend: str, *, adapter: str | None = None) -> GenerateFn:
    """The generate function of `backend` ("hf" or "vllm", as `pick_backend` resolved it)."""
    return (vllm_generate_fn if backend == "vllm" else hf_generate_fn)(model_spec, settings, adapter=adapter)


__all__ = ["cuda_available", "generate_fn_for", "generate_vllm", "hf_generate_fn", "pick_backend", "require_vllm",
           "vllm_available", "vllm_generate_fn", "vllm_request_settings"]
