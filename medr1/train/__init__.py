"""Stage 03: LoRA GRPO training.

- `recipe`: `train(params)`, read top to bottom like open-r1's `grpo.py`.
- `trainer`: GRPOConfig and trainer for either backend (TRL, Unsloth), and the effective-config check.
- `sampling`: GRPO completions from one shared prefill per prompt.
- `callbacks`, `checkpoints`, `validation`, `step_timer`: metrics, whole checkpoints, the validation
  monitor, per-phase timing. `launch`: several processes under `accelerate launch`.

`from medr1.train import train` is the way in; `python -m medr1.train` is the worker entry of `launch`.
"""

from medr1.train.recipe import TrainSetupError, train

__all__ = ["TrainSetupError", "train"]
