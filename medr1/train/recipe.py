"""LoRA GRPO training: `train(params)` turns a params file into `runs/<run_name>/train/`.

`train` reads top to bottom like open-r1's `grpo.py`: seed, data, rewards, model + LoRA, config, trainer,
train, save (rewards come before the model so that a run killed after its last checkpoint can be finished
without loading one). What is ours rather than TRL's, and why:

- Backends. TRL + PEFT everywhere (CPU included: TRL 1.16 is the first whose GRPO runs on CPU), Unsloth
  on CUDA (faster, 4-bit, vLLM generation). `backend: auto` takes Unsloth only for one process, when a
  CUDA GPU is present *and* `import unsloth` works (Unsloth refuses to import without a GPU). Asking for
  Unsloth without a GPU fails before anything loads, with the fix in the message. The GRPOConfig, then
  the policy (model + LoRA, either backend), then the trainer come from `medr1.train.trainer` (shared with
  `benchmarks/run_gpu.py`), which re-asserts params' algorithm on whatever
  the backend changed; manifest.json records what the trainer really runs (`effective_grpo_config`).
- Data. Training reads the pool that preparation wrote (`medr1.prepare.load_prepared`, checked by hash;
  prepared first when `medr1 train` runs alone) and walks a sequence of option-shuffled draws that is a
  pure function of the params.
- Resume. A run killed at any moment (kill -9 included) resumes from the last *complete* checkpoint; the
  bookkeeping (which checkpoint is whole, logs cut back to it, atomic saves) is `medr1.train.checkpoints`.
- Metrics. One CSV row per logged step with fixed columns, TensorBoard under `train/tb/`, sampled
  completions with their rewards in `samples.jsonl`: the callbacks of `medr1.train.callbacks`.
- Prompts longer than `max_prompt_length` tokens are dropped before training, counted and logged: TRL
  1.16 has no prompt truncation, and a silently cut prompt would lose its options.
- Multi-GPU (`num_processes > 1`) runs this same module under `accelerate launch` (see `medr1.train.launch`).
- Generation dominates a GRPO step. TRL generates under `torch.no_grad()` with the KV cache (without vLLM we
  pass `use_cache=True` explicitly, since gradient checkpointing turns it off in the model config). Not
  `inference_mode`: the completion ids are fed back into the autograd forward, and inference tensors
  cannot be saved for backward.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1.artifacts import read_metrics
from medr1.config import Params, load_params
from medr1.data import questions_hash
from medr1.data.option_order import shuffle_report, training_draws
from medr1.models.base import pick_device
from medr1.models.load import check_model_spec, resolve_model_path
from medr1.models.vision import is_vision_spec
from medr1.prepare import avoided_rotations, load_prepared, load_validation
from medr1.runs import RunDir, atomic_write_text, check_writable, write_manifest
from medr1.task.prompts import build_messages
from medr1.task.rewards import control_labels, get_reward_funcs
from medr1.train import checkpoints as ckpt
from medr1.train.callbacks import metrics_columns, prompt_key, training_callbacks
from medr1.train.launch import build_launch_command, die_with_parent, inside_launch, run_launch
from medr1.train.prefilter import informative_pool
from medr1.train.trainer import (  # noqa: F401  (re-exported: tests and callers import it here)
    build_config_and_policy,
    build_grpo_config,
    build_trainer,
    check_effective_config,
)
from medr1.train.validation import adopt_best, make_validation_monitor
from medr1.training_settings import changed_training_settings, describe_changes

log = logging.getLogger(__name__)
# transformers 5 renamed gradient checkpointing and TRL 1.16 still calls the old names once per step:
# noise the user cannot act on.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)


class TrainSetupError(RuntimeError):
    """A training cannot start as asked (no GPU for Unsloth, an earlier training in the way, too few GPUs);
    the message says what to change. The CLI prints it as one line."""


@dataclass
class TrainResult:
    """What `train` did.

    Attributes:
        run_dir: the run directory.
        steps: optimizer steps completed in total (across resumptions).
        metrics: the last metrics.csv row (empty when nothing was logged).
        skipped: True when a finished training was found and nothing was retrained.
        adapter_dir: the final LoRA adapter.
        resumed_from: the checkpoint training continued from, if any.
        n_questions: training questions after decontamination and the prompt-length filter.
        n_dropped_long: prompts dropped for exceeding `max_prompt_length`.
    """

    run_dir: Path
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    adapter_dir: Path | None = None
    resumed_from: Path | None = None
    n_questions: int | None = None
    n_dropped_long: int | None = None


# --------------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------------


def train(params: Params, *, progress: bool = True, reward_funcs: list[Callable] | None = None,
          echo: Callable[[str], None] | None = print) -> TrainResult:
    """LoRA GRPO on the training pool of `params`, into `runs/<run_name>/train/`; resumable.

    Args:
        params: validated `Params` (see `medr1.config`); `resume`, `force`, `num_processes` and
            `backend` decide how the run starts.
        progress: show a tqdm bar with reward and ETA.
        reward_funcs: reward callables (TRL signature) used instead of `params.reward_funcs`; for
            experiments and tests. Their `__name__`s become the metric names.
        echo: receives the worker output lines of a multi-GPU launch (notebooks print them).

    Returns:
        A `TrainResult`.

    Raises:
        ParamsError, DataError, ModelSpecError: bad params, data or model, before any model loads.
        PreparedDataError: the run's prepared data was changed after preparation.
        RuntimeError: `backend: unsloth` without a CUDA GPU, or more processes than GPUs.
        RunLockedError: another live process is writing this run.
        LaunchError: a multi-GPU launch failed (with the tail of its log).

    >>> result = train(load_params("params/demo.yaml"))  # doctest: +SKIP
    >>> result.adapter_dir  # doctest: +SKIP
    PosixPath('.../runs/demo/train/adapter')
    """
    params = Params.from_dict(params.to_dict())  # re-validate: notebooks may have edited the object
    run = RunDir(params.run_dir)
    with claim_run(params, run, progress=progress, echo=echo) as done:
        if done is not None:  # already finished, or trained by launched workers
            return done
        # Heavy imports (transformers, torch) only now that claim_run has checked the model spec: a typo fails fast.
        from transformers import PrinterCallback, set_seed

        # --- seed and backend (decided, or refused, before anything loads) ---------------------------
        set_seed(params.seed)
        device = pick_device(params.device)
        backend = select_backend(params.backend, cuda=device == "cuda", processes=params.num_processes)
        is_main = int(os.environ.get("RANK", "0")) == 0

        # --- data: the pool preparation wrote (validated, decontaminated), checked by hash -------------
        pool, contamination = load_prepared(params)
        if not pool:
            raise ValueError(f"the training pool of {params.train_sources} is empty after decontamination")
        pool = informative_pool(params, pool)  # prefilter_samples > 0: questions that still give GRPO a signal

        # --- rewards -------------------------------------------------------------------------------------
        if reward_funcs is None:

            reward_funcs = get_reward_funcs(list(params.reward_funcs))
        reward_names = [f.__name__ for f in reward_funcs]

        # --- resume point: logs cut back to it before anything is appended ---------------------------
        checkpoint = ckpt.last_complete_checkpoint(run.train_dir) if params.resume else None
        step0 = ckpt.checkpoint_step(checkpoint)
        if is_main:
            ckpt.cut_back_to(run, step0, metrics_columns(reward_names))
        if checkpoint:
            log.info("resuming from %s", checkpoint)
        if checkpoint and 0 < params.max_steps <= step0:
            # Killed after the last checkpoint but before the final adapter was saved. transformers' Trainer,
            # resumed at max_steps, runs one step more; the last checkpoint already is the final state.
            if is_main:
                ckpt.finish_from_checkpoint(params, run, checkpoint, pool, reward_names)
            return TrainResult(run.path, step0, last_metrics_row(run), adapter_dir=run.adapter_dir,
                               resumed_from=checkpoint, n_questions=len(pool), n_dropped_long=None)

        # --- GRPO config, then model + LoRA (a VLM: model and processor, see medr1.models.vision); the
        # config first, so that under ZeRO-3 the model loads sharded (medr1.train.trainer.build_config_and_policy)
        path = resolve_model_path(params.model)
        changed: dict[str, Any] = {}  # what the backend changed on its own (set back to params)
        config, model, tokenizer, peft_config, dtype_name = build_config_and_policy(
            params, path, run.train_dir, device=device, backend=backend, changed=changed)

        # --- draws: the sequence of (option-shuffled) questions the trainer walks, a function of the params
        kept, n_dropped = fit_prompts(pool, tokenizer, template=params.prompt_template,
                                      max_prompt_length=params.max_prompt_length)
        # The negative control relabels after every selection, so both arms train on the same questions.
        labelled, control = control_labels(kept, params.reward_control, seed=params.seed)
        draws = training_draws(labelled, n_training_draws(params, len(kept)), seed=params.seed,
                               shuffle_options=params.shuffle_options, option_counts=params.train_option_counts,
                               avoid_rotations=avoided_rotations(params))
        dataset = draws_dataset(draws, template=params.prompt_template)
        draw_by_prompt = {prompt_key(p, q.images): {"id": q.id, "answer": q.answer, "options": q.options}
                          for p, q in zip(dataset["prompt"], draws, strict=True)}
        ckpt.check_same_draws(run, questions_hash(draws), resuming=checkpoint is not None)
        data_hashes = {"train_pool": questions_hash(pool), "train_draws": questions_hash(draws)}
        manifest_extra = {
            "backend": backend, "device": device, "dtype": dtype_name, "model_path": path,
            "n_questions": len(kept), "n_draws": len(draws), "n_dropped_long_prompts": n_dropped,
            "resumed_from": str(checkpoint or ""),
            "option_shuffle": shuffle_report(kept, seed=params.seed, shuffle_options=params.shuffle_options,
                                             option_counts=params.train_option_counts,
                                             avoid_rotations=avoided_rotations(params)),
            "decontamination": {**{k: v for k, v in contamination.items() if k != "removed"},
                                "n_removed": len(contamination["removed"]),
                                "removed_first_100": contamination["removed"][:100]},
            "reward_names": reward_names, "reward_control": control, "status": "running",
            **({"vision": {"lora_vision": params.lora_vision, "image_max_pixels": params.image_max_pixels,
                           "n_images": sum(len(q.images) for q in kept)}} if is_vision_spec(params.model) else {}),
        }
        if is_main:
            write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes, extra=manifest_extra)

        # --- trainer ---------------------------------------------------------------------------------
        callbacks, needs_trainer = training_callbacks(run, reward_names, draw_by_prompt, params.sample_every, progress)
        # on every process: the main one validates, the others wait for it at a barrier (medr1.validation_monitor)
        monitor = make_validation_monitor(params, load_validation(params), tokenizer, run.train_dir)
        callbacks += [monitor] if monitor else []
        with _env(TENSORBOARD_LOGGING_DIR=str(run.train_dir / "tb")):
            trainer = build_trainer(params, model=model, tokenizer=tokenizer, peft_config=peft_config, config=config,
                                    reward_funcs=reward_funcs, train_dataset=dataset, callbacks=callbacks,
                                    changed=changed)
            trainer.remove_callback(PrinterCallback)  # raw log dicts; the metrics go to metrics.csv instead
            for callback in needs_trainer:
                callback.trainer = trainer
            effective, differences = check_effective_config(params, trainer, len(reward_funcs))
            manifest_extra.update(effective_grpo_config=effective, grpo_config_differences=differences,
                                  grpo_config_set_back=changed)
            if is_main:
                write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes,
                               extra=manifest_extra)

            # --- train -------------------------------------------------------------------------------
            t0 = time.perf_counter()
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            elapsed = time.perf_counter() - t0

        # --- save ------------------------------------------------------------------------------------
        ckpt.save_adapter(trainer, tokenizer, run)
        steps = trainer.state.global_step
        if trainer.accelerator.is_main_process:
            selected = adopt_best(run.train_dir, run.adapter_dir) if params.select_checkpoint == "validation" else None
            manifest_extra["selected_checkpoint"] = selected
            merged = ckpt.save_merged(params, backend, trainer, tokenizer, run) if params.merge_adapter else None
            write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes,
                           extra={**manifest_extra, "status": "finished", "global_step": steps,
                                  "train_seconds_this_session": round(elapsed, 1),
                                  "merged_dir": str(merged) if merged else None})
            ckpt.write_complete(run, params, steps, len(kept), n_dropped)
        return TrainResult(run.path, steps, last_metrics_row(run), adapter_dir=run.adapter_dir,
                           resumed_from=checkpoint, n_questions=len(kept), n_dropped_long=n_dropped)


# --------------------------------------------------------------------------------------------------
# Beside the recipe: who may write the run, resume or start over, multi-GPU launch
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def claim_run(params: Params, run: RunDir, *, progress: bool, echo) -> Iterator[TrainResult | None]:
    """Hold the run for one training; yields None to go on training here, or the result when there is
    nothing to train here (a finished run, or workers launched for `num_processes > 1`).

    Under the lock: `force` deletes the earlier training; a training started with other model-shaping
    settings (train/settings.json) is refused, naming the changed keys; `resume` finds a finished one with
    the same settings (nothing to do); `resume: false` over an earlier training refuses. The data is prepared
    before workers start, so that they only read it. A worker under `accelerate launch` takes no lock
    (its parent holds it and prepared the directory).
    """
    import shutil

    check_model_spec(params.model)
    # refuse before touching files
    select_backend(params.backend, cuda=pick_device(params.device) == "cuda", processes=params.num_processes)
    if inside_launch():
        die_with_parent()  # a killed launch must not leave workers writing into the run
        yield None
        return
    check_writable(run.path)
    with run.lock("train"):
        if params.force:
            log.info("force: deleting %s", run.train_dir)
            shutil.rmtree(run.train_dir, ignore_errors=True)
        elif not params.resume and (run.train_dir.exists() and any(run.train_dir.iterdir())):
            raise TrainSetupError(f"{run.train_dir} holds an earlier training and resume is false; set "
                                  f"resume: true to continue it or force: true to start over")
        elif changed := changed_training_settings(run, params):
            # Never "nothing to do" (nor a resumed mix of two settings) over changed settings: the adapter
            # here would be reported under params it was not trained with.
            raise TrainSetupError(f"{run.train_dir} holds a training started with other settings "
                                  f"({describe_changes(changed)}). Set force: true to train afresh over it, "
                                  f"or choose another run_name.")
        elif (done := ckpt.finished_training(run, params)) is not None:
            log.info("%s already finished %d steps with these settings; nothing to do (raise max_steps or set "
                     "force: true)", run.path, done["global_step"])
            yield TrainResult(run.path, done["global_step"], last_metrics_row(run), skipped=True,
                              adapter_dir=run.adapter_dir, n_questions=done.get("n_questions"),
                              n_dropped_long=done.get("n_dropped_long"))
            return
        ckpt.record_training_settings(run, params)
        atomic_write_text(run.path / "params.yaml", params.to_yaml())
        if params.num_processes > 1:

            informative_pool(params, load_prepared(params)[0])  # once, here: the workers read the same files
            yield _train_launched(params, run, progress=progress, echo=echo)
            return
        yield None


def _unsloth_importable() -> bool:
    try:
        import unsloth  # noqa: F401
    except Exception:  # Unsloth raises NotImplementedError/ImportError/RuntimeError without a usable GPU
        return False
    return True


def select_backend(requested: str, *, cuda: bool, processes: int = 1,
                   unsloth_importable: Callable[[], bool] = _unsloth_importable) -> str:
    """The training backend for a `backend` param, before any model is loaded.

    Args:
        requested: "auto", "trl" or "unsloth".
        cuda: whether training will run on a CUDA GPU.
        processes: `num_processes`; with several, "auto" takes TRL (Unsloth's GRPO with its vLLM engine
            under DDP is a reported hang, unslothai/unsloth#4559, and its multi-GPU path is untested here).
        unsloth_importable: probe for Unsloth (only called with CUDA; Unsloth cannot import without).

    Returns:
        "trl" or "unsloth".

    Raises:
        RuntimeError: "unsloth" without a CUDA GPU.

    >>> select_backend("auto", cuda=False)
    'trl'
    """
    if requested == "trl":
        return "trl"
    if requested == "unsloth":
        if not cuda:
            raise TrainSetupError("backend 'unsloth' needs a CUDA GPU and none is available (or device: cpu was "
                               "set); use backend: trl (or backend: auto) on this machine")
        if not unsloth_importable():
            raise TrainSetupError("backend 'unsloth' was requested but `import unsloth` fails; install the GPU "
                               "extra (pip install -e '.[gpu]') or use backend: trl")
        if processes > 1:
            log.warning("backend: unsloth with num_processes=%d: Unsloth's multi-GPU GRPO is untested here "
                        "(with vLLM under DDP it is a reported hang, unslothai/unsloth#4559); backend: trl is "
                        "what auto picks", processes)
        return "unsloth"
    if requested == "auto":
        return "unsloth" if cuda and processes == 1 and unsloth_importable() else "trl"
    raise ValueError(f"backend must be auto, trl or unsloth, got {requested!r}")


def _train_launched(params: Params, run: RunDir, *, progress: bool, echo) -> TrainResult:
    import torch

    # device: cpu with several processes is the documented test mode (DDP over gloo, configs/accelerate/cpu.yaml):
    # it runs on any machine what several GPUs run. Without device: cpu, processes need GPUs.
    cpu = pick_device(params.device) == "cpu" and params.device == "cpu"
    if cpu:
        log.warning("num_processes=%d on CPU: the multi-process TEST MODE (DDP over gloo), slower than one process",
                    params.num_processes)
    elif torch.cuda.device_count() < params.num_processes:
        raise TrainSetupError(f"num_processes={params.num_processes} needs as many CUDA GPUs; "
                           f"found {torch.cuda.device_count()}. Set num_processes: 1 (or device: cpu for the "
                           f"CPU multi-process test mode).")
    run.train_dir.mkdir(parents=True, exist_ok=True)
    cmd = build_launch_command(params, run.path / "params.yaml", progress=progress, cpu=cpu)
    log.info("launching: %s", " ".join(cmd))
    run_launch(cmd, log_path=run.train_dir / "launch.log", echo=echo)
    done = json.loads((run.train_dir / ckpt.COMPLETE_FILE).read_text())
    return TrainResult(run.path, done["global_step"], last_metrics_row(run), adapter_dir=run.adapter_dir,
                       n_questions=done.get("n_questions"), n_dropped_long=done.get("n_dropped_long"))


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def last_metrics_row(run: RunDir) -> dict[str, Any]:
    """The last row of the run's metrics.csv (empty when nothing was logged)."""

    rows = read_metrics(run.metrics_csv)
    return rows[-1] if rows else {}


# --------------------------------------------------------------------------------------------------
# Data: the dataset TRL walks
# --------------------------------------------------------------------------------------------------


def build_dataset(questions: Sequence, tokenizer, *, template: str, max_prompt_length: int):
    """The training `datasets.Dataset` (`prompt`, `answer`, `options_json`, `id`), too-long prompts dropped.

    Args:
        questions: `medr1.data.Question` records (for training, the option-shuffled draws).
        tokenizer: the policy's tokenizer (its chat template measures the prompt length).
        template: prompt template name (`medr1.task.prompts.TEMPLATES`).
        max_prompt_length: prompts with more tokens than this are dropped.

    Returns:
        (dataset, number of prompts dropped).
    """
    kept, dropped = fit_prompts(questions, tokenizer, template=template, max_prompt_length=max_prompt_length)
    return draws_dataset(kept, template=template), dropped


def fit_prompts(questions: Sequence, tokenizer, *, template: str, max_prompt_length: int) -> tuple[list, int]:
    """The questions whose prompt fits `max_prompt_length` tokens, and how many did not.

    Measured on the questions as written, before options are shuffled: a permutation reorders the same
    option lines, so it does not move a prompt across the limit by more than a token or two.

    Raises:
        ValueError: no prompt fits.
    """

    questions = list(questions)
    texts = [tokenizer.apply_chat_template(build_messages(q, template), add_generation_prompt=True, tokenize=False)
             for q in questions]
    text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a VLM's processor holds the tokenizer
    lengths = [len(ids) for ids in text_tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    kept = [q for q, n in zip(questions, lengths, strict=True) if n <= max_prompt_length]
    dropped = len(questions) - len(kept)
    if dropped:
        log.warning("dropped %d of %d training prompts longer than max_prompt_length=%d tokens (longest: %d)",
                    dropped, len(questions), max_prompt_length, max(lengths))
    if not kept:
        raise ValueError(f"no training prompt fits max_prompt_length={max_prompt_length} tokens "
                         f"(shortest: {min(lengths) if lengths else 'n/a'}); raise max_prompt_length")
    return kept, dropped


def draws_dataset(draws: Sequence, *, template: str):
    """A `datasets.Dataset` with one row per draw, in order: the trainer walks it without reshuffling."""
    from datasets import Dataset

    # Visual questions add an `images` column (paths): TRL's GRPOTrainer puts them into the first user message.
    return Dataset.from_list([{"prompt": build_messages(q, template), "answer": q.answer,
                               "options_json": json.dumps(q.options, ensure_ascii=False), "id": q.id,
                               **({"images": list(q.images)} if getattr(q, "images", ()) else {})}
                              for q in draws])


def prompts_per_step(params: Params) -> int:
    """Distinct prompts (GRPO groups) in one optimizer step: the global batch over `num_generations`."""
    return params.per_device_train_batch_size * params.gradient_accumulation_steps * params.num_processes \
        // params.num_generations


def n_training_draws(params: Params, n_questions: int) -> int:
    """How many prompt groups the run trains on: `max_steps` steps, or `num_train_epochs` passes over
    the pool rounded up to whole steps (the trainer drops an incomplete last batch)."""
    per_step = prompts_per_step(params)
    if params.max_steps > 0:
        return params.max_steps * per_step
    return max(1, math.ceil(params.num_train_epochs * n_questions / per_step)) * per_step


# --------------------------------------------------------------------------------------------------
# Command line (worker entry of `medr1.train.launch`, and usable directly)
# --------------------------------------------------------------------------------------------------


def train_from_cli(argv: Sequence[str] | None = None) -> int:
    """`python -m medr1.train -f params/X.yaml [--set key=value ...] [--no-progress]`; returns an exit code.

    The lead's `medr1 train` does the same through `train(load_params(...))`; this entry exists so that
    `accelerate launch --module medr1.train` has a module to run.
    """
    parser = argparse.ArgumentParser(prog="python -m medr1.train", description="LoRA GRPO training")
    parser.add_argument("-f", "--params", dest="params_file", help="YAML params file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params_file, args.overrides)
    result = train(params, progress=not args.no_progress)
    if not inside_launch() or int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.steps} steps into {result.run_dir}" + (" (already finished)" if result.skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(train_from_cli())
