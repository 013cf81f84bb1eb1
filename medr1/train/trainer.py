"""One place builds what a GRPO run trains with: the `GRPOConfig` and the trainer (the policy, model + LoRA on
either backend, comes from `medr1.models.load.load_policy`); and reads back what the built trainer will really run.

Why this module exists: switching `backend` must change speed, not the experiment. Measured on an H100
(issue 15): Unsloth 2026.10 set `mask_truncated_completions=True` and `epsilon_high=0.28` on its own
whenever `loss_type` is dapo (its patched `GRPOConfig.__init__` overwrites whatever is passed), and
replaced the tokenizer's pad token. So every algorithm knob a backend may touch is a param with one
default (`medr1.config`), both backends receive the same values, and after the backend has done its
patching the values are *re-asserted* on the config and on the trainer (TRL copies most of them into
trainer attributes at construction, so fixing only `trainer.args` would not change what runs). What
runs is then read back from the trainer (`effective_grpo_config`) and compared with what params asked;
`medr1 train` writes both into `manifest.json`, and a difference is a logged warning.

`medr1.train` and `benchmarks/run_gpu.py` both build through here, so the benchmark times the
configuration that training uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from medr1.config import Params

# The policy (model + LoRA, either backend) is loaded in medr1.models; re-exported for callers of this module.
from medr1.models.base import intended_pad_token, set_pad_token, text_tokenizer  # noqa: F401
from medr1.train.sampling import use_shared_prefill

log = logging.getLogger(__name__)

# Algorithm knobs compared between params and the built trainer. Each is read from the trainer attribute
# TRL copies it into at construction (what the loss really uses), else from `trainer.args`.
TRAINER_ATTRS = {
    "loss_type": "loss_type", "beta": "beta", "epsilon": "epsilon_low", "epsilon_high": "epsilon_high",
    "mask_truncated_completions": "mask_truncated_completions", "scale_rewards": "scale_rewards",
    "importance_sampling_level": "importance_sampling_level", "num_iterations": "num_iterations",
    "num_generations": "num_generations", "max_completion_length": "max_completion_length",
    "temperature": "temperature", "top_p": "top_p", "use_vllm": "use_vllm", "vllm_mode": "vllm_mode",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
}
ARGS_KEYS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm",
             "weight_decay", "lr_scheduler_type", "warmup_steps", "seed")
# Recorded with the effective config for the reader, not compared (no param sets them).
INFO_ATTRS = ("top_k", "min_p", "repetition_penalty")
INFO_ARGS = ("generation_batch_size", "steps_per_generation", "bf16", "fp16", "gradient_checkpointing")


# --------------------------------------------------------------------------------------------------
# GRPOConfig
# --------------------------------------------------------------------------------------------------


def grpo_config_kwargs(params: Params, output_dir: str | os.PathLike, *, cuda: bool,
                       dtype_name: str = "float32") -> dict[str, Any]:
    """The keyword arguments of `trl.GRPOConfig` for `params`; the single place where our names meet TRL's.

    Args:
        params: the run's params.
        output_dir: `run_dir/train` (checkpoints go to `checkpoint-N/` in it).
        cuda: training on a CUDA GPU (bf16/fp16 mixed precision) or on CPU (`use_cpu`, fp32).
        dtype_name: the model's dtype ("bfloat16", "float16", "float32"); picks the mixed precision.

    TRL 1.16 has no `max_prompt_length`; prompts are filtered when the dataset is built.
    """
    # open-r1 sets these; no hub pushes, no wandb: reviewers read metrics.csv, samples.jsonl and tb/.
    return dict(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        # optimisation
        learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler_type,
        warmup_steps=params.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        max_steps=params.max_steps,
        # The dataset is the run's materialised sequence of draws (`medr1.data.option_order.training_draws`,
        # `num_train_epochs` passes already inside it), walked once, in order: reshuffling would break
        # the balance of gold letters within a pass, and resume relies on the order being a pure function
        # of the params.
        num_train_epochs=params.num_train_epochs if params.max_steps > 0 else 1.0,
        shuffle_dataset=False,
        gradient_checkpointing=params.gradient_checkpointing,
        # GRPO: every knob explicit, so no backend default decides the algorithm
        num_generations=params.num_generations,
        max_completion_length=params.max_completion_length,
        temperature=params.temperature,
        top_p=params.top_p,
        beta=params.beta,
        loss_type=params.loss_type,
        epsilon=params.epsilon,
        epsilon_high=params.epsilon if params.epsilon_high is None else params.epsilon_high,
        mask_truncated_completions=params.mask_truncated_completions,
        scale_rewards=params.scale_rewards,
        importance_sampling_level=params.importance_sampling_level,
        num_iterations=params.num_iterations,
        reward_weights=[float(w) for w in params.reward_weights] if params.reward_weights else None,
        generation_kwargs={"use_cache": True},
        use_vllm=params.use_vllm,
        vllm_mode=params.vllm_mode,  # colocate: vLLM inside the training process, no server to start
        vllm_gpu_memory_utilization=params.vllm_gpu_memory_utilization,
        remove_unused_columns=False,  # rewards need `answer` and `options_json`
        # precision and device
        use_cpu=not cuda,
        bf16=cuda and dtype_name == "bfloat16",
        fp16=cuda and dtype_name == "float16",
        dataloader_pin_memory=cuda,
        # checkpoints and logs
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        logging_steps=params.logging_steps,
        report_to=["tensorboard"],
        disable_tqdm=True,  # our ProgressBar shows reward and ETA instead of raw log dicts
        log_completions=False,  # TRL's version prints rich tables; samples.jsonl keeps them instead
        push_to_hub=False,
    )


# The GRPOConfig fields re-asserted after construction: the algorithm, not bookkeeping.
REASSERTED_FIELDS = ("loss_type", "beta", "epsilon", "epsilon_high", "mask_truncated_completions", "scale_rewards",
                     "importance_sampling_level", "num_iterations", "num_generations", "max_completion_length",
                     "temperature", "top_p", "learning_rate", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization")


def build_grpo_config(params: Params, output_dir: str | os.PathLike, *, cuda: bool, dtype_name: str = "float32",
                      changed: dict[str, Any] | None = None, **overrides):
    """`trl.GRPOConfig` for `params`, with the algorithm fields re-asserted after construction.

    With Unsloth imported, `trl.GRPOConfig` is Unsloth's subclass, whose `__init__` may overwrite values
    it was given; each such field is set back to ours, logged as a warning, and recorded in `changed`
    (field -> the value the backend had put there).

    Args:
        overrides: GRPOConfig fields set on top of params (benchmarks: `save_strategy="no"`, ...).
    """
    from trl import GRPOConfig

    kwargs = {**grpo_config_kwargs(params, output_dir, cuda=cuda, dtype_name=dtype_name), **overrides}
    config = GRPOConfig(**kwargs)
    for key in REASSERTED_FIELDS:
        if key in kwargs and _differs(getattr(config, key, None), kwargs[key]):
            log.warning("%s changed GRPOConfig.%s from %r to %r; set back to %r (params)",
                        type(config).__name__, key, kwargs[key], getattr(config, key, None), kwargs[key])
            if changed is not None:
                changed[key] = _plain(getattr(config, key, None))
            setattr(config, key, kwargs[key])
    return config


# --------------------------------------------------------------------------------------------------
# Trainer, and what it really runs
# --------------------------------------------------------------------------------------------------


def build_trainer(params: Params, *, model, tokenizer, peft_config, config, reward_funcs: Sequence[Callable],
                  train_dataset, callbacks: Sequence | None = None, changed: dict[str, Any] | None = None):
    """`GRPOTrainer` (Unsloth's, when Unsloth is imported), with params' algorithm re-asserted on it.

    TRL copies most algorithm knobs from `args` into trainer attributes at construction; a backend that
    changes them there (or in `args` afterwards) is set back, warned about and recorded in `changed`.
    """
    from trl import GRPOTrainer

    trainer = GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=config, train_dataset=train_dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks or []))
    want = requested_grpo_config(params, pad_token=intended_pad_token(params, tokenizer), n_rewards=len(reward_funcs))
    have = effective_grpo_config(trainer)
    for key, attr in TRAINER_ATTRS.items():
        if _differs(have.get(key), want[key]):
            log.warning("%s changed %s from %r to %r; set back to %r (params)", type(trainer).__name__, key,
                        want[key], have.get(key), want[key])
            if changed is not None:
                changed.setdefault(key, have.get(key))
            if hasattr(trainer, attr):
                setattr(trainer, attr, want[key])
            if key in REASSERTED_FIELDS:
                setattr(trainer.args, key, want[key])
    if _differs(have.get("pad_token"), want["pad_token"]):
        log.warning("%s changed pad_token to %r; set back to %r (params)", type(trainer).__name__, have.get("pad_token"),
                    want["pad_token"])
        if changed is not None:
            changed.setdefault("pad_token", have.get("pad_token"))
        set_pad_token(trainer.model, trainer.processing_class, want["pad_token"])
    # TRL bakes sampling settings and the pad id into the GenerationConfig it builds at construction.
    gen = getattr(trainer, "generation_config", None)
    if gen is not None and hasattr(gen, "pad_token_id"):
        gen.pad_token_id = text_tokenizer(trainer.processing_class).pad_token_id
        gen.temperature, gen.top_p = want["temperature"], want["top_p"]
    if params.backend == "trl":

        use_shared_prefill(trainer)
    return trainer


def requested_grpo_config(params: Params, *, pad_token: str, n_rewards: int) -> dict[str, Any]:
    """What params ask the trainer to run, under the keys of `effective_grpo_config`."""
    out = {key: getattr(params, key) for key in TRAINER_ATTRS if hasattr(params, key)}
    out["epsilon_high"] = params.epsilon if params.epsilon_high is None else params.epsilon_high
    out.update(learning_rate=params.learning_rate, per_device_train_batch_size=params.per_device_train_batch_size,
               gradient_accumulation_steps=params.gradient_accumulation_steps, max_grad_norm=params.max_grad_norm,
               weight_decay=params.weight_decay, lr_scheduler_type=params.lr_scheduler_type,
               warmup_steps=params.warmup_ratio, seed=params.seed,
               reward_weights=[float(w) for w in params.reward_weights] if params.reward_weights
               else [1.0] * n_rewards, pad_token=pad_token)
    return out


def effective_grpo_config(trainer) -> dict[str, Any]:
    """What the built trainer runs, read back from it (not from params): JSON-ready."""
    out: dict[str, Any] = {}
    for key, attr in TRAINER_ATTRS.items():
        out[key] = _plain(getattr(trainer, attr) if hasattr(trainer, attr) else getattr(trainer.args, key, None))
    for key in ARGS_KEYS:
        out[key] = _plain(getattr(trainer.args, key, None))
    weights = getattr(trainer, "reward_weights", None)
    out["reward_weights"] = [float(w) for w in weights.tolist()] if weights is not None else None
    tok = text_tokenizer(trainer.processing_class)
    out["pad_token"] = getattr(tok, "pad_token", None)
    out["pad_token_id"] = getattr(tok, "pad_token_id", None)
    gen = getattr(trainer, "generation_config", None)  # what TRL's own generate() is called with
    out["generation_pad_token_id"] = getattr(gen, "pad_token_id", None)
    for key in INFO_ATTRS:
        out[key] = _plain(getattr(trainer, key, getattr(trainer.args, key, None)))
    for key in INFO_ARGS:
        out[key] = _plain(getattr(trainer.args, key, None))
    out["trainer_class"] = type(trainer).__name__
    return out


def config_differences(requested: dict[str, Any], effective: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{key: {"params": asked, "effective": runs}} for every requested key the trainer does not run as asked."""
    return {k: {"params": v, "effective": effective.get(k)} for k, v in requested.items()
            if _differs(effective.get(k), v)}


def check_effective_config(params: Params, trainer, n_rewards: int) -> tuple[dict, dict]:
    """(effective config, differences from params); each difference is logged as a warning."""
    effective = effective_grpo_config(trainer)
    requested = requested_grpo_config(params, pad_token=intended_pad_token(params, trainer.processing_class),
                                      n_rewards=n_rewards)
    diff = config_differences(requested, effective)
    for key, d in diff.items():
        log.warning("the trainer runs %s=%r but params ask for %r", key, d["effective"], d["params"])
    return effective, diff


def _plain(value):
    """A JSON-ready copy: enums to their value, tensors and numpy scalars to Python numbers."""
    if hasattr(value, "value") and type(value).__module__ != "builtins" and not hasattr(value, "tolist"):
        return value.value
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _differs(a, b) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(float(a) - float(b)) > 1e-12 * max(1.0, abs(float(b)))
    return a != b
