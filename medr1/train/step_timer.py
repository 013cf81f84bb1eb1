"""Timing of GRPO training: whole optimizer steps, and the generation inside them.

Why a callback and not a wrapper around `trainer.training_step`: the Trainer calls `training_step` once per
*micro-batch*, and Unsloth's loop does too, so on an H100 (issue 15) wrapping it gave 4 timings for 2 steps
and a "generation share" of 4.5. `on_step_begin`/`on_step_end` fire once per optimizer step in transformers'
loop (begin at the first micro-batch of an accumulation window, end after the optimizer step), whatever
the backend does inside. On CUDA each boundary synchronises the device first, so queued kernels are
counted in the step that launched them.

Generation is timed by wrapping the trainer's generation method on the instance
(`_generate_single_turn` in TRL 1.15-1.16, which both the HF and the vLLM paths go through; `_generate`
otherwise); each call's seconds are credited to the optimizer step in which it ran. TRL generates once
per generation batch (every `steps_per_generation` micro-batches), so a step's generation time is the sum
of its calls.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

GENERATION_METHODS = ("_generate_single_turn", "_generate")


def cuda_synchronize() -> None:
    """Wait for queued CUDA kernels (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Records, per optimizer step: wall seconds, generation seconds, generation calls.

    Attributes:
        steps: one dict per completed optimizer step: `step` (global step), `seconds`, `generation_s`,
            `generation_calls`.
        generation_method: the name of the wrapped method (None until `wrap_generation`).
    """

    def __init__(self, synchronize: Callable[[], None] = cuda_synchronize, clock: Callable[[], float] = time.perf_counter):
        self.sync, self.clock = synchronize, clock
        self.steps: list[dict[str, Any]] = []
        self.generation_method: str | None = None
        self._t0: float | None = None
        self._gen_s = 0.0
        self._gen_calls = 0

    # -- callback -----------------------------------------------------------------------------------
    def on_step_begin(self, args, state, control, **kwargs):
        if self._t0 is None:  # only the first micro-batch of a step opens it
            self.sync()
            self._t0 = self.clock()
            self._gen_s, self._gen_calls = 0.0, 0

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        self.sync()
        self.steps.append({"step": state.global_step, "seconds": self.clock() - self._t0,
                           "generation_s": self._gen_s, "generation_calls": self._gen_calls})
        self._t0 = None

    # -- generation ---------------------------------------------------------------------------------
    def wrap_generation(self, trainer, method: str | None = None) -> str:
        """Time every call of the trainer's generation method; returns the method's name."""
        name = method or next((m for m in GENERATION_METHODS if hasattr(trainer, m)), None)
        if name is None:
            raise AttributeError(f"{type(trainer).__name__} has none of {GENERATION_METHODS}; pass method=")
        original = getattr(trainer, name)

        def timed(*args, **kwargs):
            self.sync()
            t0 = self.clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                self._gen_s += self.clock() - t0
                self._gen_calls += 1

        setattr(trainer, name, timed)
        self.generation_method = name
        return name

    # -- summary ------------------------------------------------------------------------------------
    def summary(self, warmup: int = 1) -> dict[str, Any]:
        """Median step seconds and generation share over the steps after the first `warmup` ones.

        The generation share is total generation seconds over total step seconds of those steps (a ratio of
        sums, so one slow step cannot push it above 1).
        """
        measured = self.steps[warmup:]
        if not measured:
            return {"measured_steps": 0, "warmup_steps": min(warmup, len(self.steps))}
        total = sum(s["seconds"] for s in measured)
        return {
            "measured_steps": len(measured), "warmup_steps": warmup,
            "median_step_s": statistics.median(s["seconds"] for s in measured),
            "median_generation_s": statistics.median(s["generation_s"] for s in measured),
            "generation_share": sum(s["generation_s"] for s in measured) / total if total else None,
            "first_step_s": self.steps[0]["seconds"],
            "generation_method": self.generation_method,
        }
