"""Vision-language models: which specs are VLMs, how to load one with its processor, and how to train it.

One job: everything model-side that differs between Med-R1 (text) and MedVLM-R1 (Qwen2-VL / Qwen2.5-VL
on images), so that `medr1.models`, `medr1.train` and `medr1.evaluation.evaluate` only branch once into here.
Why it is built this way:

- A VLM is `(model, processor)` where a text model is `(model, tokenizer)`; TRL's GRPOTrainer takes the
  processor as `processing_class` and an `images` column, and inserts the images into the first user
  message itself. `vision_messages` builds exactly that message layout for evaluation, so a model is
  scored on the prompt format it was trained on (tests/models/test_vision.py compares it with TRL's).
- LoRA goes on the language model only by default (the vision tower stays frozen, as in MedVLM-R1's
  GRPO, which changed no visual weights); `lora_vision: true` adds the vision blocks' projections.
  Target modules are a regex excluding `visual`, because Qwen2.5-VL's vision MLP reuses the names
  `gate_proj`/`up_proj`/`down_proj` and plain suffix matching would adapt it silently.
- No pretrained VLM can be downloaded where this was written, and no GPU is there: `embedded:tiny-qwen2-vl`
  is a randomly initialised Qwen2-VL built offline from `configs/architectures/tiny-qwen2-vl.json` and the
  embedded SmolLM2 tokenizer (plus Qwen2-VL's vision tokens), cached once like the embedded text model.
  It runs the real code path in seconds; it knows nothing, and nothing it outputs means anything.
- transformers' Qwen2VLProcessor insists on a video processor, which needs torchvision; where torchvision
  is missing (the CPU machines) an image-only subclass is built from the same tokenizer and image
  processor (`load_processor`). With torchvision (GPU machines), `AutoProcessor` is used unchanged.
- Unsloth's `FastVisionModel` is used for `backend: unsloth`; it needs a GPU and was not run here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

from medr1.models.base import (
    EMBEDDED_PREFIX,
    embedded_checkpoint,
    finish_loading,
    lora_config,
    pick_device,
    pick_dtype,
    processor_source,
)
from medr1.paths import CACHE_DIR, REPO_ROOT

EMBEDDED_VISION = {"tiny-qwen2-vl": REPO_ROOT / "configs" / "architectures" / "tiny-qwen2-vl.json"}
VISION_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
_VISION_HUB_NAME = re.compile(r"qwen2(\.5)?-vl|medvlm", re.IGNORECASE)
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# Qwen2-VL's chat layout (ChatML, an image as <|vision_start|><|image_pad|><|vision_end|> where it appears in
# the content), for the tiny model; real checkpoints ship their own template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
VISION_LORA_MODULES = ("qkv", "proj", "fc1", "fc2")  # Qwen2-VL vision blocks (Qwen2.5-VL's MLP: the LM names)


# --------------------------------------------------------------------------------------------------
# Which specs are VLMs
# --------------------------------------------------------------------------------------------------


def embedded_vision_name(spec: str) -> str | None:

    name = spec[len(EMBEDDED_PREFIX):] if isinstance(spec, str) and spec.startswith(EMBEDDED_PREFIX) else None
    return name if name in EMBEDDED_VISION else None


def is_vision_spec(spec: str) -> bool:
    """Whether a model spec names a Qwen2-VL / Qwen2.5-VL model (embedded, local, adapter or hub id).

    Decided without loading weights: an embedded name, a local `config.json`'s `model_type`, an adapter's
    base model, or for hub ids the name (Qwen2-VL-*, Qwen2.5-VL-*, MedVLM-R1).

    >>> is_vision_spec("embedded:tiny-qwen2-vl"), is_vision_spec("Qwen/Qwen2-VL-2B-Instruct"), is_vision_spec("embedded:smollm2-135m")
    (True, True, False)
    """
    if not isinstance(spec, str) or not spec:
        return False
    if embedded_vision_name(spec):
        return True
    path = Path(spec).expanduser()
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return is_vision_spec(base) if base and base != spec else False
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        return config.get("model_type") in VISION_MODEL_TYPES
    return bool(_VISION_HUB_NAME.search(spec)) and not path.exists()


def is_processor(obj) -> bool:
    from transformers import ProcessorMixin

    return isinstance(obj, ProcessorMixin)


# --------------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------------


@functools.cache
def _image_only_processor_class():
    from transformers import ProcessorMixin, Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor without its video processor (which needs torchvision); images only."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

        def to_dict(self):
            # Saved as Qwen2-VL's own processor, so that AutoProcessor loads it wherever torchvision exists.
            return {**super().to_dict(), "processor_class": "Qwen2VLProcessor"}

    return ImageOnlyQwen2VLProcessor


def _ready(processor):
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # batched generation: prompts end where generation starts
    return processor


def load_processor(path: str | os.PathLike, *, image_max_pixels: int | None = None, trust_remote_code: bool = False):
    """The processor of a Qwen2-VL-family checkpoint (or adapter directory), left padding, pad token set.

    Args:
        path: a checkpoint or adapter directory holding the processor files, or a hub id.
        image_max_pixels: cap on pixels per image (Qwen2-VL's `max_pixels`): bounds visual tokens per image.
    """
    from transformers import AutoProcessor, AutoTokenizer

    kwargs = {"max_pixels": image_max_pixels} if image_max_pixels else {}
    if importlib.util.find_spec("torchvision") is not None:
        return _ready(AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs))
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    template_file = Path(path) / "chat_template.jinja"
    template = template_file.read_text() if template_file.is_file() else tokenizer.chat_template
    return _ready(_image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                                chat_template=template))


# --------------------------------------------------------------------------------------------------
# The tiny random Qwen2-VL (CPU tests and smoke runs)
# --------------------------------------------------------------------------------------------------


def tiny_vision_checkpoint(name: str = "tiny-qwen2-vl", cache_dir: Path | None = None) -> Path:
    """The checkpoint directory (weights, config, processor) of an embedded tiny VLM, built on first use.

    Deterministic: the same config file and seed give the same weights; the directory name carries a hash
    of the config, so editing the config builds a new one. Written to a temporary directory and renamed
    into place, like `medr1.models.base.embedded_checkpoint`.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = json.loads(EMBEDDED_VISION[name].read_text())
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_dir or CACHE_DIR) / "models" / f"{name}-{digest}"
    if (target / "config.json").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(embedded_checkpoint("smollm2-135m", cache_dir))
    tok.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    tok.chat_template = CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    text = {**spec["text_config"], "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = Qwen2VLConfig(text_config=text, vision_config=spec["vision_config"],
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.random.fork_rng():
        torch.manual_seed(spec.get("seed", 0))
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    image_processor = Qwen2VLImageProcessorPil(**spec["image_processor"])
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    image_processor.save_pretrained(tmp)
    (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_vision_path(spec: str) -> str:
    """`from_pretrained`-ready path of a vision spec: embedded names become their built checkpoint."""
    name = embedded_vision_name(spec)
    return str(tiny_vision_checkpoint(name)) if name else spec


# --------------------------------------------------------------------------------------------------
# Loading for evaluation
# --------------------------------------------------------------------------------------------------


def _model_class():
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText


def load_vision_model(spec: str, *, adapter: str | None = None, device: str = "auto", torch_dtype: str = "auto",
                      trust_remote_code: bool = False, merge_adapter: bool = False,
                      image_max_pixels: int | None = None):
    """`(model, processor)` of a VLM spec, optionally with a LoRA adapter; the counterpart of
    `medr1.models.load.load_model` (which calls this for vision specs). Safetensors only."""

    path = resolve_vision_path(spec)
    device = pick_device(device)
    model = _model_class().from_pretrained(path, dtype=pick_dtype(torch_dtype, device), use_safetensors=True,
                                           trust_remote_code=trust_remote_code)
    processor = load_processor(processor_source(path, adapter), image_max_pixels=image_max_pixels,
                               trust_remote_code=trust_remote_code)
    return finish_loading(model, processor.tokenizer.pad_token_id, adapter=adapter, merge_adapter=merge_adapter,
                          device=device), processor


# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------


def vision_prompt_text(spec: str, messages: list[dict], *, image_max_pixels: int | None = None) -> str:
    """The prompt text a VLM's processor makes of `messages` (`medr1.task.prompts.vision_messages`): its chat
    template with the image placeholders where the images go, as training and evaluation feed it. For
    showing a reader the prompt (notebook 06): loads the processor, not the model (an embedded spec is built
    once and cached, as for training)."""
    processor = load_processor(resolve_vision_path(spec), image_max_pixels=image_max_pixels)
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def lora_target_modules(names: list[str], *, include_vision: bool = False) -> str:
    """PEFT `target_modules` regex (full match on module names): `names` in the language model only, or
    also the vision blocks' projections with `include_vision`.

    >>> bool(re.fullmatch(lora_target_modules(["q_proj"]), "model.language_model.layers.0.self_attn.q_proj"))
    True
    >>> bool(re.fullmatch(lora_target_modules(["gate_proj"]), "model.visual.blocks.0.mlp.gate_proj"))
    False
    """
    language = rf"(?!.*\bvisual\b).*\.(?:{'|'.join(re.escape(n) for n in names)})"
    if not include_vision:
        return language
    # The transformer blocks of the vision tower; not its patch embedding (a Conv3d) nor the merger.
    vision = "|".join(re.escape(n) for n in [*names, *VISION_LORA_MODULES])
    return rf"(?:{language}|.*\bvisual\.blocks\.\d+\..*\.(?:{vision}))"


def load_vision_trl(params, path: str, device: str):
    """(model, processor, peft LoraConfig, dtype name) for TRL GRPO on a VLM; the vision counterpart of
    `medr1.models.load.load_trl_policy`."""

    dtype = pick_dtype(params.torch_dtype, device)
    model = _model_class().from_pretrained(path, dtype=dtype, trust_remote_code=params.trust_remote_code,
                                           use_safetensors=True)
    processor = load_processor(path, image_max_pixels=params.image_max_pixels,
                               trust_remote_code=params.trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    peft_config = lora_config(params, lora_target_modules(list(params.lora_target_modules),
                                                          include_vision=params.lora_vision))
    return model, processor, peft_config, str(dtype).removeprefix("torch.")


def load_vision_unsloth(params, path: str):
    """Unsloth's vision path (GPU only; not run where this was written): `FastVisionModel` loads the VLM
    (optionally 4-bit) and wraps LoRA itself, language layers only unless `lora_vision`."""
    import unsloth  # noqa: F401  (patches transformers/trl; must come first)
    from unsloth import FastVisionModel

    model, processor = FastVisionModel.from_pretrained(
        model_name=path, load_in_4bit=params.load_in_4bit,
        dtype=None if params.torch_dtype == "auto" else params.torch_dtype,
        use_gradient_checkpointing="unsloth" if params.gradient_checkpointing else False,
        trust_remote_code=params.trust_remote_code)
    model = FastVisionModel.get_peft_model(
        model, finetune_vision_layers=params.lora_vision, finetune_language_layers=True,
        finetune_attention_modules=True, finetune_mlp_modules=True,
        r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout, random_state=params.seed)
    if params.image_max_pixels and hasattr(processor, "image_processor"):
        processor.image_processor.max_pixels = params.image_max_pixels
    _ready(processor)
    return model, processor, None, str(getattr(model, "dtype", "bfloat16")).removeprefix("torch.")
