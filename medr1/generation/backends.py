"""Generation backends: which one runs an evaluation (HF on CPU, vLLM on a CUDA GPU), and the generate
functions evaluation calls, each loading its model on first use (the vLLM engine path is `generation.vllm`).

`pick_backend("auto")` chooses vLLM only when CUDA and vLLM are both there; asking for vLLM without them
raises, so a GPU recipe never silently falls back to a 50x slower path. vLLM is imported lazily so that
CPU machines never import it. vLLM schedules its own batches (continuous batching), so the evaluation
batch size does not apply there; `vllm_generate_fn` says so once in the log instead of ignoring it silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from medr1.generation.hf import generate
from medr1.generation.vision import generate_vision
from medr1.generation.vllm import (
    cuda_available,
    generate_vision_vllm,
    generate_vllm,
    require_vllm,
    vllm_available,
)
from medr1.models.load import load_model
from medr1.models.vision import is_processor, is_vision_spec

log = logging.getLogger(__name__)

GenerateFn = Callable[..., list]


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


def hf_generate_fn(model_spec: str, settings, *, adapter: str | None = None) -> GenerateFn:
    """A generate function over an HF model (text, or vision through its processor), loaded on first call so
    that a fully resumed evaluation loads nothing. `settings`: a `medr1.evaluation.evaluate.EvalSettings`."""

    loaded: dict[str, Any] = {}

    def fn(prompts, **kwargs):
        if not loaded:
            # Merging folds LoRA into the weights: the same outputs up to float rounding, faster decoding.
            loaded["model"], loaded["tok"] = load_model(model_spec, adapter=adapter, device=settings.device,
                                                        torch_dtype=settings.torch_dtype,
                                                        trust_remote_code=settings.trust_remote_code,
                                                        merge_adapter=adapter is not None)

        if is_processor(loaded["tok"]):  # a vision-language model: images through its processor

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

        if is_vision_spec(model_spec):

            return generate_vision_vllm(model_spec, prompts, **kw, **kwargs)
        return generate_vllm(model_spec, prompts, **kw, **kwargs)

    return fn


def generate_fn_for(model_spec: str, settings, backend: str, *, adapter: str | None = None) -> GenerateFn:
    """The generate function of `backend` ("hf" or "vllm", as `pick_backend` resolved it)."""
    return (vllm_generate_fn if backend == "vllm" else hf_generate_fn)(model_spec, settings, adapter=adapter)


__all__ = ["generate_fn_for", "hf_generate_fn", "pick_backend", "vllm_generate_fn"]
