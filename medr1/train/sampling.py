"""GRPO's sampling step on CPU: each prompt prefilled once for its whole group of generations.

TRL's transformers path hands `model.generate` every prompt `num_generations` times (its sampler repeats
each prompt in adjacent rows), so the prompt is prefilled once per generation. On the 2-core CPU demo,
with 2 prompts x 4 generations of ~140 prompt tokens and 16 new tokens, that `generate` took 7.1 s of a
~15 s GRPO step; prefilling each prompt once and repeating its KV cache for the group took 4.9-5.7 s
(measured side by side, embedded SmolLM2-135M). Decode steps cost about the same for 2 or 8 rows (they
read every weight once), so the saving is the repeated prefill.

`use_shared_prefill(trainer)` replaces the trainer's `_generate_single_turn` (TRL's per-turn generation
hook) on this one trainer object with a wrapper that runs `medr1.generation.hf.sample_token_ids` when the
batch is plain text on CPU with plain temperature / top-p sampling, and calls TRL's own method otherwise
(vLLM, paged generation, images, tools, top-k, min-p, repetition penalty, gradient checkpointing, rows
that are not groups of identical prompts). The samples have the distribution TRL's would; they are drawn
from a generator seeded from torch's global RNG, which TRL seeds and saves in its checkpoints, so a run
is reproducible and a resumed run continues the same stream.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from medr1.generation.hf import sample_token_ids

log = logging.getLogger(__name__)


def _groups(prompt_ids: list[list[int]]) -> int | None:
    """The size of the runs of identical adjacent prompts when all runs have one size, else None."""
    runs, i = [], 0
    while i < len(prompt_ids):
        j = i
        while j < len(prompt_ids) and list(prompt_ids[j]) == list(prompt_ids[i]):
            j += 1
        runs.append(j - i)
        i = j
    return runs[0] if runs and len(set(runs)) == 1 else None


def shared_prefill_applies(trainer: Any) -> str | None:
    """None when every step can use the shared prefill, else why not (checked once, at setup)."""
    args, gen = trainer.args, getattr(trainer, "generation_config", None)
    if not hasattr(trainer, "_generate_single_turn") or not hasattr(trainer, "eos_token_ids"):
        return "a TRL without the per-turn generation hook"
    if getattr(trainer, "use_vllm", False):
        return "vLLM generates"
    if getattr(args, "use_transformers_paged", False):
        return "paged generation"
    if getattr(args, "gradient_checkpointing", False):
        return "gradient checkpointing (TRL toggles it around generation)"
    if trainer.accelerator.device.type != "cpu" or trainer.accelerator.num_processes != 1:
        return "not a single CPU process"
    if gen is None:
        return "no generation config"
    if getattr(gen, "top_k", None) not in (None, 0) or getattr(gen, "min_p", None) is not None:
        return "top-k / min-p sampling"
    if getattr(gen, "repetition_penalty", None) not in (None, 1.0):
        return "repetition penalty"
    return None


def use_shared_prefill(trainer: Any) -> bool:
    """Route `trainer`'s plain-text generation through `sample_token_ids`; False (and TRL's own path)
    where `shared_prefill_applies` says it does not apply."""
    import torch

    why_not = shared_prefill_applies(trainer)
    if why_not:
        log.info("GRPO generation: TRL's model.generate (%s)", why_not)
        return False
    original = trainer._generate_single_turn

    def generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        group = _groups(prompt_ids)
        has_images = images is not None and any(x is not None for x in images)
        if has_images or multimodal_fields or has_tool_images or not group:
            return original(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        gen = self.generation_config
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        model = self.accelerator.unwrap_model(self.model)
        completion_ids = sample_token_ids(model, prompt_ids[::group], num_samples=group,
                                          max_new_tokens=self.max_completion_length,
                                          temperature=float(gen.temperature or 1.0), top_p=float(gen.top_p or 1.0),
                                          eos=list(self.eos_token_ids), pad_id=self._tokenizer.pad_token_id,
                                          generator=generator)
        return completion_ids, None

    trainer._generate_single_turn = types.MethodType(generate_single_turn, trainer)
    log.info("GRPO generation: each prompt prefilled once for its group (medr1.train.sampling)")
    return True
