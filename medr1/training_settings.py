"""Which params shape a trained model, and which of them changed since a run's training started.

A rerun over a finished or interrupted training with other model-shaping settings must not report the old
adapter under the new params: `train` and `medr1 pipeline` compare with `changed_training_settings` and stop,
naming the changed keys. Kept apart from `config` (every setting and its default) because it reads the run
directory (`medr1.runs`), which the params themselves do not need.
"""

from __future__ import annotations

from medr1.config import Params
from medr1.runs import RunDir, recorded_training_settings

# Params that may change between an interrupted run and its resumption without changing what is trained.
RESUME_SAFE_KEYS = {"resume", "force", "max_steps", "num_train_epochs", "save_steps", "save_total_limit",
                    "logging_steps", "sample_every", "merge_adapter", "reference_results"}
# Params that do not shape the trained adapter either: where the run and its data live, the device, and
# switches that trade memory for compute. Every other param (and no `eval_*` one) shapes the model, so a
# training found under other values of any of them is not this training (`changed_training_settings`).
NOT_SHAPING_KEYS = RESUME_SAFE_KEYS | {"run_name", "runs_dir", "data_dir", "device", "gradient_checkpointing",
                                       "vllm_mode", "vllm_gpu_memory_utilization"}


def training_settings(params: Params) -> dict:
    """The params that shape the trained model (all but `NOT_SHAPING_KEYS` and the `eval_*` ones)."""
    return {k: v for k, v in params.to_dict().items() if k not in NOT_SHAPING_KEYS and not k.startswith("eval_")}


def changed_training_settings(run: RunDir, params: Params) -> dict[str, tuple]:
    """{key: (recorded, now)} for each model-shaping param whose value differs from the one `run`'s training
    was started with (`medr1.runs.recorded_training_settings`); {} when they agree or no training is there.
    A key the record lacks (a param added since) counts as changed only when `params` gives it a value
    other than its default."""
    before = recorded_training_settings(run)
    if before is None:
        return {}
    defaults = Params().to_dict()
    now = training_settings(params)
    return {k: (before.get(k, defaults.get(k)), v) for k, v in now.items() if before.get(k, defaults.get(k)) != v}


def describe_changes(changed: dict[str, tuple]) -> str:
    """"learning_rate: 0.0005 then, 0.001 now; ..." for an error message."""
    return "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(changed.items()))
