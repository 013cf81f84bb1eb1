"""A strict stand-in for vLLM 0.31 (the GPU pin's version; vLLM needs a CUDA GPU and is never installed on CPU).

It rejects what vLLM rejects, from vLLM 0.31.0's source (`pip download --no-deps vllm==0.31.0`):
- `SamplingParams` is a msgspec Struct (vllm/sampling_params.py:211): an unknown keyword raises
  `TypeError: Unexpected keyword argument 'x'` (msgspec's own message).
- `LLM(model, *, <named>, **kwargs)` (vllm/entrypoints/llm.py:180-226) puts `kwargs` into the `EngineArgs`
  dataclass (vllm/engine/arg_utils.py:464), which raises TypeError on a name it lacks; `max_lora_rank` must be
  one of `MaxLoRARanks` (vllm/config/lora.py:27). `LLM` has no `shutdown` in 0.31; the engine-core client does
  (vllm/v1/engine/core_client.py:391).
- `LoRARequest(lora_name, lora_int_id, lora_path="", ...)` (vllm/lora/request.py): id < 1 -> ValueError,
  empty path -> AssertionError.
- `generate`: a `lora_request` on an engine without LoRA, and a prompt as long as the context, raise
  `VLLMValidationError` for the whole call (vllm/v1/engine/input_processor.py:245-253, 519-557).

Images are sized the way vLLM 0.31 sizes them for Qwen2-VL: the HF image processor built with the engine's
`mm_processor_kwargs` (vllm/transformers_utils/processor.py:201-240) and called with them again
(vllm/multimodal/processing/context.py:311-338), so a test sees the prompt length vLLM would.
`install(monkeypatch)` puts the modules in `sys.modules`; `FakeLLM.instances` lists the engines built.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

# Field names of vllm 0.31.0's SamplingParams (sampling_params.py:211-...), in declaration order.
SAMPLING_PARAMS_FIELDS = (
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "watermarking", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "prompt_logprob_token_ids", "prompt_logprob_start", "logprob_token_ids", "flat_logprobs",
    "detokenize", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "output_kind", "stream_interval", "skip_clone", "output_text_buffer_length", "_eos_token_id",
    "_all_stop_token_ids", "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args", "bad_words",
    "_bad_words_token_ids", "skip_reading_prefix_cache", "thinking_token_budget", "repetition_detection",
    "routed_experts_prompt_start", "trace_decode_token_ids")
# LLM.__init__'s named keyword parameters (entrypoints/llm.py:180-226).
LLM_KEYWORDS = (
    "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "allowed_local_media_path", "allowed_media_domains", "tensor_parallel_size", "dtype", "quantization", "revision",
    "tokenizer_revision", "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb", "offload_group_size",
    "offload_num_in_group", "offload_prefetch_step", "offload_params", "enforce_eager",
    "enable_return_routed_experts", "return_sampling_mask", "disable_custom_all_reduce", "hf_token", "hf_overrides",
    "mm_processor_kwargs", "pooler_config", "structured_outputs_config", "profiler_config", "attention_config",
    "kv_cache_memory_bytes", "compilation_config", "quantization_config", "logits_processors", "spec_method",
    "spec_model", "spec_tokens")
# The EngineArgs fields our code may reach through LLM's **kwargs (engine/arg_utils.py:464-...); the real
# dataclass has 252 fields, every one of these among them.
ENGINE_ARGS_FIELDS = (
    "max_model_len", "limit_mm_per_prompt", "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras",
    "lora_dtype", "max_num_seqs", "max_num_batched_tokens", "enable_sleep_mode", "model_impl",
    "distributed_executor_backend", "logprobs_mode", "enable_prefix_caching", "disable_log_stats")
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMValidationError(ValueError):
    """vllm/exceptions.py:28 (a client error)."""


class SamplingParams:
    def __init__(self, *args, **kwargs):
        if len(args) > len(SAMPLING_PARAMS_FIELDS):
            raise TypeError("Extra positional arguments provided")
        values = dict(zip(SAMPLING_PARAMS_FIELDS, args, strict=False))
        for key, value in kwargs.items():
            if key not in SAMPLING_PARAMS_FIELDS:
                raise TypeError(f"Unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"Argument {key!r} given by name and position")
            values[key] = value
        self.__dict__.update({"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": None, **values})


class LoRARequest:
    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str = "", base_model_name: str | None = None,
                 tensorizer_config_dict: dict | None = None, load_inplace: bool = False,
                 is_3d_lora_weight: bool = False):
        if lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {lora_int_id}")
        assert lora_path, "lora_path cannot be empty"
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path

    def __eq__(self, other):  # vLLM compares requests by name (request.py)
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self):
        return hash(self.lora_name)


class _EngineCore:
    def __init__(self):
        self.shut_down = False

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True


def _check_llm_kwargs(kwargs: dict) -> None:
    for key in kwargs:
        if key not in LLM_KEYWORDS and key not in ENGINE_ARGS_FIELDS:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {key!r}")
    rank = kwargs.get("max_lora_rank", 16)
    if rank not in MAX_LORA_RANKS:
        raise ValueError(f"max_lora_rank: input should be one of {MAX_LORA_RANKS}, got {rank}")


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs):
        _check_llm_kwargs(kwargs)
        from transformers import AutoTokenizer

        self.model, self.kwargs = model, kwargs
        config = json.loads((Path(model) / "config.json").read_text())
        ctx = (config.get("text_config") or {}).get("max_position_embeddings") or config["max_position_embeddings"]
        self.engine_core = _EngineCore()
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", ctx)),
                                          engine_core=self.engine_core)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.calls: list[dict] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def _image_tokens(self, images) -> int:
        """Visual tokens of a prompt's images as vLLM 0.31 computes them (see the module docstring)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        mm = dict(self.kwargs.get("mm_processor_kwargs") or {})
        processor = Qwen2VLImageProcessorPil.from_pretrained(self.model, **mm)
        with warnings.catch_warnings():  # 5.24 (CPU) deprecates call-time pixels; the GPU pin, 5.17, does not
            warnings.simplefilter("ignore", FutureWarning)
            grid = processor(images=list(images), return_tensors="pt", **mm)["image_grid_thw"]
        self.image_pixels = [int(g.prod()) * processor.patch_size ** 2 for g in grid]
        return int(grid.prod(dim=-1).sum()) // processor.merge_size ** 2

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None):
        if lora_request is not None and not self.kwargs.get("enable_lora"):
            raise VLLMValidationError(f"Got lora_request {lora_request} but LoRA is not enabled!")
        if lora_request is not None and not (Path(lora_request.lora_path) / "adapter_config.json").is_file():
            raise ValueError(f"no adapter at {lora_request.lora_path}")
        params = sampling_params or SamplingParams()
        ctx = self.llm_engine.model_config.max_model_len
        lengths = []
        for p in prompts:
            if "prompt_token_ids" in p:
                n = len(p["prompt_token_ids"])
            else:
                images = (p.get("multi_modal_data") or {}).get("image") or []
                limit = (self.kwargs.get("limit_mm_per_prompt") or {}).get("image", 999)
                if len(images) > limit:
                    raise VLLMValidationError(f"At most {limit} image(s) may be provided in one prompt.")
                n = len(self.tokenizer(p["prompt"], add_special_tokens=False)["input_ids"]) - len(images)
                n += self._image_tokens(images) if images else 0
            if n >= ctx:
                raise VLLMValidationError(f"The decoder prompt (length {n}) is longer than the maximum model length "
                                          f"of {ctx}.")
            lengths.append(n)
        self.calls.append({"prompts": list(prompts), "params": params, "lora_request": lora_request})
        text = "<answer>A</answer>"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [SimpleNamespace(prompt_token_ids=list(range(n)),
                                outputs=[SimpleNamespace(text=text, token_ids=ids, finish_reason="stop")] * params.n)
                for n in lengths]


def install(monkeypatch) -> type[FakeLLM]:
    """Make `import vllm` (and `vllm.lora.request`) give these fakes, and pretend CUDA is there."""
    import medr1.generation.backends
    import medr1.generation.vllm

    modules = {}
    for name in ("vllm", "vllm.lora", "vllm.lora.request"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        modules[name] = module
    modules["vllm"].LLM, modules["vllm"].SamplingParams = FakeLLM, SamplingParams
    modules["vllm.lora.request"].LoRARequest = LoRARequest
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for module in (medr1.generation.vllm, medr1.generation.backends):  # the dispatcher holds its own name
        monkeypatch.setattr(module, "cuda_available", lambda: True)
    monkeypatch.setattr(FakeLLM, "instances", [])
    return FakeLLM

