"""The vLLM path: engine availability, request settings, and text and image generation through an engine.

vLLM runs only with a CUDA GPU and the `gpu` extra; everything here imports it inside functions, so the
CPU stack imports this module freely. `generation.backends` chooses this path; this module never imports
the dispatcher (it has its own logger), which is what keeps the generation package free of circles.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence

from medr1.data.images import MAX_IMAGES
from medr1.generation.hf import PROMPT_TOO_LONG, Generation, encode_prompts
from medr1.generation.vision import _images_of
from medr1.models.load import resolve_model_path
from medr1.models.vision import load_processor, resolve_vision_path

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



def vllm_request_settings(*, num_samples: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                          adapter: str | os.PathLike | None):
    """vLLM's `SamplingParams` for our decoding settings (top_p only when sampling) and the `LoRARequest`
    of an adapter (None without one); shared by text and vision generation."""
    from vllm import SamplingParams

    params = SamplingParams(n=num_samples, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                            max_tokens=max_new_tokens, seed=seed)
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

    if llm is None:
        llm = LLM(model=resolve_model_path(model_spec), dtype=torch_dtype, seed=seed, enable_lora=adapter is not None,
                  max_lora_rank=lora_rank, trust_remote_code=trust_remote_code,
                  gpu_memory_utilization=gpu_memory_utilization)
    tokenizer = llm.get_tokenizer()
    ids = encode_prompts(tokenizer, prompts)
    ctx = llm.llm_engine.model_config.max_model_len
    keep = [i for i, r in enumerate(ids) if len(r) + max_new_tokens <= ctx]
    params, lora = vllm_request_settings(num_samples=num_samples, temperature=temperature, top_p=top_p,
                                         max_new_tokens=max_new_tokens, seed=seed, adapter=adapter)
    start = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids[i]} for i in keep], params, lora_request=lora)
    latency = time.perf_counter() - start
    results = [Generation(i, [""] * num_samples, len(ids[i]), [0] * num_samples, [PROMPT_TOO_LONG] * num_samples, 0.0)
               for i in range(len(ids))]
    for i, out in zip(keep, outputs, strict=True):
        results[i] = Generation(i, [o.text for o in out.outputs], len(ids[i]), [len(o.token_ids) for o in out.outputs],
                                ["length" if o.finish_reason == "length" else "stop" for o in out.outputs], latency)
    if len(keep) < len(ids):
        log.warning("skipped %d prompt(s) longer than the model context (%d) minus max_new_tokens", len(ids) - len(keep),
                    ctx)
    if on_batch:
        on_batch(results)
    return results


def generate_vision_vllm(model_spec: str, prompts: Sequence[list[dict]], *, max_new_tokens: int,
                         temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, seed: int = 0,
                         adapter: str | None = None, lora_rank: int = 64, torch_dtype: str = "auto",
                         trust_remote_code: bool = False, gpu_memory_utilization: float = 0.85,
                         image_max_pixels: int | None = None,
                         on_batch: Callable[[list[Generation]], None] | None = None) -> list[Generation]:
    """vLLM generation with images (CUDA only; unmeasured: no GPU where this was written).

    The chat template comes from the model's processor; images go in as `multi_modal_data`, at most
    `medr1.data.images.MAX_IMAGES` per prompt. Results arrive at the end; `on_batch` is called once.
    """

    require_vllm()
    from vllm import LLM  # noqa: I001  (lazy: importing vllm initialises CUDA)

    path = resolve_vision_path(model_spec)
    processor = load_processor(adapter or path, image_max_pixels=image_max_pixels, trust_remote_code=trust_remote_code)
    llm = LLM(model=path, dtype=torch_dtype, seed=seed, enable_lora=adapter is not None, max_lora_rank=lora_rank,
              trust_remote_code=trust_remote_code, gpu_memory_utilization=gpu_memory_utilization,
              limit_mm_per_prompt={"image": MAX_IMAGES},
              mm_processor_kwargs={"max_pixels": image_max_pixels} if image_max_pixels else None)
    requests = [{"prompt": processor.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False),
                 "multi_modal_data": {"image": _images_of(p)}} for p in prompts]
    params, lora = vllm_request_settings(num_samples=num_samples, temperature=temperature, top_p=top_p,
                                         max_new_tokens=max_new_tokens, seed=seed, adapter=adapter)
    start = time.perf_counter()
    outputs = llm.generate(requests, params, lora_request=lora)
    latency = time.perf_counter() - start
    results = [Generation(i, [o.text for o in out.outputs], len(out.prompt_token_ids or []),
                          [len(o.token_ids) for o in out.outputs],
                          ["length" if o.finish_reason == "length" else "stop" for o in out.outputs], latency)
               for i, out in enumerate(outputs)]
    if on_batch:
        on_batch(results)
    return results
