"""medr1: teaching an instruction-tuned LLM to reason about medicine with GRPO on multiple-choice QA.

The package holds all logic; the numbered notebooks in `notebooks/` only narrate and call into it.
Submodules are imported on demand so that `medr1.data` or `medr1.task.rewards` never pull in torch.
"""

__version__ = "0.1.0"
