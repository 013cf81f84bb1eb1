"""A fake vLLM engine for evaluation tests: vLLM needs a CUDA GPU and is never installed on CPU.

Signatures are not ours to guess: `install` builds the modules with `api_contract.fake_vllm`, so every
`LLM(...)`, `LLM.generate(...)`, `SamplingParams(...)` and `LoRARequest(...)` is checked against vLLM's
pinned signatures (tests/contracts/api_snapshot.json) and refused as vLLM would refuse it. What this module
adds is the engine's behaviour our code depends on, from vLLM 0.31.0's source:
- `generate` with a `lora_request` on an engine built without LoRA, or with a prompt as long as the
  context, raises `VLLMValidationError` for the whole call (vllm/v1/engine/input_processor.py:245-253, 519-557);
- the context is the model config's `max_position_embeddings` unless `max_model_len` is given;
- images are sized the way vLLM sizes them for Qwen2-VL: the HF image processor built with the engine's
  `mm_processor_kwargs` (vllm/transformers_utils/processor.py:201-240) and called with them again
  (vllm/multimodal/processing/context.py:311-338), so a test sees the prompt length vLLM would;
- `LLM` has no `shutdown` in 0.31; the engine-core client does (vllm/v1/engine/core_client.py:391).
`install(monkeypatch)` puts the modules in `sys.modules` and pretends CUDA is there; `FakeLLM.instances`
lists the engines built.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

from api_contract import fake_vllm


class VLLMValidationError(ValueError):
    """vllm/exceptions.py:28 (a client error)."""


class _EngineCore:
    def __init__(self):
        self.shut_down = False

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True


class FakeLLM:
    """The engine behind the contract-checked `vllm.LLM` (built with the keywords `LLM` accepted)."""

    instances: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs):
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
        self.calls.append({"prompts": list(prompts), "params": sampling_params, "lora_request": lora_request})
        text = "<answer>A</answer>"
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n_samples = getattr(sampling_params, "n", None) or 1
        return [SimpleNamespace(prompt_token_ids=list(range(n)),
                                outputs=[SimpleNamespace(text=text, token_ids=ids, finish_reason="stop")] * n_samples)
                for n in lengths]


def install(monkeypatch) -> type[FakeLLM]:
    """Make `import vllm` (and `vllm.lora.request`) give the contract-checked fakes over `FakeLLM`, and
    pretend CUDA is there."""
    import importlib.machinery

    import medr1.generation.backends
    import medr1.generation.vllm

    for name, module in fake_vllm(FakeLLM).items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec("vllm") works
        monkeypatch.setitem(sys.modules, name, module)
    for module in (medr1.generation.vllm, medr1.generation.backends):  # the dispatcher holds its own name
        monkeypatch.setattr(module, "cuda_available", lambda: True)
    monkeypatch.setattr(FakeLLM, "instances", [])
    return FakeLLM
