"""The one door to a model: resolve a spec, check it early, load it for evaluation or as a GRPO policy.

These are the functions that ask "text or vision?" (`is_vision_spec`), so they stand above both
`models.base` (shared helpers) and `models.vision` (the Qwen2-VL family): neither of those imports this
module, which is what keeps loading free of import circles.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from medr1.models.base import (
    _HUB_ID,
    EMBEDDED_MODELS,
    EMBEDDED_PREFIX,
    NOT_WEIGHTS,
    WEIGHT_SUFFIXES,
    ModelSpecError,
    _embedded_gguf,
    embedded_checkpoint,
    finish_loading,
    intended_pad_token,
    load_tokenizer,
    lora_config,
    pick_device,
    pick_dtype,
    processor_source,
    set_pad_token,
)
from medr1.models.vision import (
    embedded_vision_name,
    is_vision_spec,
    load_vision_model,
    load_vision_trl,
    load_vision_unsloth,
    resolve_vision_path,
)
from medr1.paths import CACHE_DIR, file_sha256

log = logging.getLogger(__name__)


def resolve_model_path(spec: str) -> str:
    """A spec as something `from_pretrained` accepts: embedded names become their converted checkpoint."""
    check_model_spec(spec)
    if spec.startswith(EMBEDDED_PREFIX):

        if embedded_vision_name(spec):  # a tiny random VLM built from a config in the repo (medr1.models.vision)
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
    instead (`medr1.models.vision.load_vision_model`), images capped at `image_max_pixels` (ignored for text
    models), whether the processor comes from the base model or the adapter directory.
    """

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



def load_policy(params, path: str, *, device: str, backend: str, changed: dict | None = None):
    """The trainable policy for `backend`: (model, tokenizer or processor, peft_config or None, dtype name).

    TRL: transformers + a `LoraConfig` that TRL applies. Unsloth: `FastLanguageModel` loads (optionally
    4-bit, optionally with its vLLM engine) and wraps LoRA itself, so no peft_config goes to TRL; the pad
    token Unsloth may have replaced is set back to the one params ask for (recorded in `changed`).
    Vision-language models go through `medr1.models.vision` (LoRA on the language model unless `lora_vision`).
    """

    if is_vision_spec(params.model):

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
        # The repository asked for, as TRL and evaluation load it: by default Unsloth swaps in its own mirror
        # (`unsloth/...`, `...-bnb-4bit` with load_in_4bit), whose tokenizer and chat template may differ.
        use_exact_model_name=True,
        max_seq_length=params.max_prompt_length + params.max_completion_length,
        load_in_4bit=params.load_in_4bit,
        fast_inference=params.use_vllm,
        gpu_memory_utilization=params.vllm_gpu_memory_utilization,
        max_lora_rank=params.lora_r,
        # A torch dtype, the one TRL loads with: Unsloth asserts on strings other than "float16"/"bfloat16".
        dtype=pick_dtype(params.torch_dtype, "cuda"),
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


def model_identity(spec: str) -> dict:
    """What a base model spec names, cheaply and without loading it: the embedded file's sha256; a local
    directory's config.json sha256 and weight file sizes (hashing 16 GB of weights per evaluation costs
    more than it tells: a changed base model changes its config or its sizes, or is a new path); a hub
    id's cached snapshot revision, where the cache has one."""
    out: dict = {"spec": spec}
    if spec.startswith(EMBEDDED_PREFIX):
        if not embedded_vision_name(spec):  # tiny VLMs are built from a config in the repo: the spec is all
            try:
                gguf = _embedded_gguf(spec[len(EMBEDDED_PREFIX):])
            except ModelSpecError:  # a stand-in spec (tests): its name is all there is
                return out
            out.update(file=gguf.name, sha256=file_sha256(gguf))
        return out
    path = Path(spec).expanduser()
    if not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec, "config.json")
        except Exception:  # no hub library or a malformed id: the spec alone is the identity
            cached = None
        if isinstance(cached, str) and "/snapshots/" in cached:
            out["revision"] = Path(cached).parent.name
        return out
    out["path"] = str(path.resolve())
    if (path / "config.json").is_file():
        out["config_sha256"] = file_sha256(path / "config.json")
    out["weight_sizes"] = {p.name: p.stat().st_size for p in sorted(path.iterdir())
                           if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.name not in NOT_WEIGHTS}
    return out


def local_tokenizer(spec: str, *, trust_remote_code: bool = False):
    """The tokenizer of `spec` when it can be had without a download or a conversion (a local directory, a
    hub id in the local cache, an embedded model already converted), else None: for a dry run, which
    records token ids where it can and loads nothing heavy."""
    try:
        kind = check_model_spec(spec)
        if kind == "embedded":
            name = spec[len(EMBEDDED_PREFIX):]
            if embedded_vision_name(spec):
                return None
            target = CACHE_DIR / "models" / f"{name}-{_embedded_gguf(name).stat().st_size}"
            return load_tokenizer(str(target)) if (target / "config.json").is_file() else None
        if kind == "hub":
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(spec, local_files_only=True, trust_remote_code=trust_remote_code)
        return load_tokenizer(spec, trust_remote_code=trust_remote_code)
    except Exception as e:  # offline, not cached, or no tokenizer files: the dry run records no token ids
        log.info("no local tokenizer for %s (%s): prompts.jsonl gets no token ids", spec, e)
        return None
