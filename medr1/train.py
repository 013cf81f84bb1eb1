"""LoRA GRPO training: `train(params)` turns a params file into `runs/<run_name>/train/`.

Read top to bottom like open-r1's `grpo.py`: seed, data, model, rewards, trainer, train, save. What is
ours rather than TRL's, and why:

- Backends. TRL + PEFT everywhere (CPU included: TRL 1.16 is the first whose GRPO runs on CPU), Unsloth
  on CUDA (faster, 4-bit, vLLM generation). `backend: auto` takes Unsloth only when a CUDA GPU is
  present *and* `import unsloth` works, because Unsloth refuses to import without a GPU. Asking for
  Unsloth without a GPU fails before anything loads, with the fix in the message. The Unsloth path could
  not be run where this was written (no GPU); it follows Unsloth's documented GRPO recipe. Model, LoRA,
  GRPOConfig and trainer are built in `medr1.grpo_setup` (shared with `benchmarks/run_gpu.py`), which
  re-asserts params' algorithm on whatever the backend changed; manifest.json records what the trainer
  really runs (`effective_grpo_config`).
- Resume. A run killed at any moment (kill -9 included) resumes from the last *complete* checkpoint:
  `transformers`' own `get_last_checkpoint` takes the newest folder even when it is half written, so
  `last_complete_checkpoint` checks that `trainer_state.json` (written last) parses and names the step,
  and that the weights file is whole. `metrics.csv` and `samples.jsonl` are cut back to that step first,
  so they hold each step exactly once.
- Metrics. One CSV row per logged step with fixed columns (figures read them without TensorBoard), plus
  TensorBoard under `train/tb/`, plus sampled completions with their rewards in `samples.jsonl`.
- Prompts longer than `max_prompt_length` tokens are dropped before training, counted and logged: TRL
  1.16 has no prompt truncation, and a silently cut prompt would lose its options.
- Multi-GPU (`num_processes > 1`) runs this same module under `accelerate launch` (see `medr1.launch`).
- Generation dominates a GRPO step. TRL generates under `torch.no_grad()` with the KV cache (we pass
  `use_cache=True` explicitly, since gradient checkpointing turns it off in the model config). Not
  `inference_mode`: the completion ids are fed back into the autograd forward, and inference tensors
  cannot be saved for backward.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import shutil
import struct
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1.config import Params, load_params, read_params_file
from medr1.grpo_setup import build_grpo_config  # noqa: F401  (re-exported: tests and callers import it here)
from medr1.launch import build_launch_command, die_with_parent, inside_launch, run_launch
from medr1.runs import RunDir, atomic_write_json, atomic_write_text, check_writable, write_manifest
from medr1.validation_monitor import adopt_best, make_validation_monitor, truncate_validation

log = logging.getLogger(__name__)
# transformers 5 renamed gradient checkpointing and TRL 1.16 still calls the old names once per step:
# noise the user cannot act on.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Weight files a finished `save_pretrained` leaves in a checkpoint (LoRA adapter first).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin")
COMPLETE_FILE = "complete.json"  # written last, after the final adapter: "this training finished"
# Fixed metrics.csv columns (then one `reward/<name>` per reward function), and the TRL log key of each.
METRIC_COLUMNS = {
    "step": None, "epoch": "epoch", "loss": "loss", "reward": "reward", "reward_std": "reward_std",
    "frac_reward_zero_std": "frac_reward_zero_std", "kl": "kl", "entropy": "entropy",
    "completion_length": "completions/mean_length", "clipped_ratio": "completions/clipped_ratio",
    "learning_rate": "learning_rate", "grad_norm": "grad_norm", "step_time": "step_time",
    # the collapse monitor (medr1.letter_bias), computed by the MetricsCSV callback from the step's answers
    "answer_top_share": None, "answer_entropy": None,
}
# Params that may change between an interrupted run and its resumption without changing what is trained.
RESUME_SAFE_KEYS = {"resume", "force", "max_steps", "num_train_epochs", "save_steps", "save_total_limit",
                    "logging_steps", "sample_every", "merge_adapter", "reference_results"}


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
# Backend and trainer configuration
# --------------------------------------------------------------------------------------------------


def _unsloth_importable() -> bool:
    try:
        import unsloth  # noqa: F401
    except Exception:  # Unsloth raises NotImplementedError/ImportError/RuntimeError without a usable GPU
        return False
    return True


def select_backend(requested: str, *, cuda: bool, unsloth_importable: Callable[[], bool] = _unsloth_importable
                   ) -> str:
    """The training backend for a `backend` param, before any model is loaded.

    Args:
        requested: "auto", "trl" or "unsloth".
        cuda: whether training will run on a CUDA GPU.
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
        return "unsloth"
    if requested == "auto":
        return "unsloth" if cuda and unsloth_importable() else "trl"
    raise ValueError(f"backend must be auto, trl or unsloth, got {requested!r}")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def build_dataset(questions: Sequence, tokenizer, *, template: str, max_prompt_length: int):
    """The training `datasets.Dataset` (`prompt`, `answer`, `options_json`, `id`), too-long prompts dropped.

    Args:
        questions: `medr1.data.Question` records (for training, the option-shuffled draws).
        tokenizer: the policy's tokenizer (its chat template measures the prompt length).
        template: prompt template name (`medr1.prompts.TEMPLATES`).
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
    from medr1.prompts import build_messages

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

    from medr1.prompts import build_messages

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


def _prompt_key(prompt: Any, images: Sequence[str] = ()) -> str:
    """A draw's prompt as a lookup key. TRL logs a VLM's prompts with the images inserted as content blocks;
    they are flattened back to the dataset's text messages plus the image paths, so both sides key alike
    (text prompts key exactly as their JSON)."""
    images = [str(i) for i in images]
    if isinstance(prompt, list):
        flat = []
        for m in prompt:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                images += [str(b.get("image")) for b in content if isinstance(b, dict) and b.get("type") == "image"]
                content = "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
                m = {**m, "content": content}
            flat.append(m)
        prompt = flat
    return json.dumps([prompt, images] if images else prompt, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Checkpoints and resumable logs
# --------------------------------------------------------------------------------------------------


def _safetensors_whole(path: Path) -> bool:
    # A safetensors file is an 8-byte header length, a JSON header, then the tensors; the largest end
    # offset in the header tells the size a completely written file must have.
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, struct.error, KeyError, TypeError):
        return False


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `checkpoint-N/` was completely written: `trainer_state.json` (the Trainer writes it last)
    parses and says step N, and a weights file is present and whole.

    >>> is_complete_checkpoint("/nonexistent/checkpoint-3")
    False
    """
    path = Path(path)
    m = CHECKPOINT_RE.match(path.name)
    if not m or not path.is_dir():
        return False
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != int(m.group(1)):
        return False
    for name in WEIGHT_FILES:
        weights = path / name
        if weights.is_file() and weights.stat().st_size > 0:
            return _safetensors_whole(weights) if name.endswith(".safetensors") else True
    return False


def _checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    if not train_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in train_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(train_dir: str | os.PathLike) -> Path | None:
    """The newest complete `checkpoint-N/` under `train_dir`, skipping half-written ones, or None.

    >>> last_complete_checkpoint("/nonexistent") is None
    True
    """
    for _, path in reversed(_checkpoints(Path(train_dir))):
        if is_complete_checkpoint(path):
            return path
    return None


def checkpoint_step(path: str | os.PathLike | None) -> int:
    """N of `checkpoint-N` (0 for None)."""
    return int(CHECKPOINT_RE.match(Path(path).name).group(1)) if path else 0


def metrics_columns(reward_names: Sequence[str]) -> list[str]:
    """metrics.csv header: the fixed columns, then `reward/<name>` per reward function."""
    return [*METRIC_COLUMNS, *(f"reward/{n}" for n in reward_names)]


def truncate_metrics(path: str | os.PathLike, step: int, columns: Sequence[str]) -> int:
    """Keep only metrics.csv rows with `step <= step`, one per step (the last one wins), in step order,
    under `columns`; rewritten atomically. Returns the number of rows kept.

    Called before resuming from checkpoint `step`: rows logged after it are re-logged by the resumed run.
    """
    path = Path(path)
    rows: dict[int, dict] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    s = int(float(row.get("step") or "nan"))
                except ValueError:
                    continue  # a line cut by a kill: dropped, its step is re-logged
                if s <= step:
                    rows[s] = row
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for s in sorted(rows):
        writer.writerow(rows[s])
    atomic_write_text(path, buf.getvalue())
    return len(rows)


def truncate_jsonl(path: str | os.PathLike, step: int) -> int:
    """Keep only samples.jsonl records with `step <= step` (and whole lines); returns how many."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))
    return len(kept)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """metrics.csv as a list of dicts with floats (None for empty cells)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------------
# Callbacks (imported lazily: transformers is heavy)
# --------------------------------------------------------------------------------------------------


def _step_answers(trainer, draw_by_prompt: dict[str, dict]) -> list[tuple[dict | None, str | None, Any]]:
    """(draw, extracted letter, completion) for each completion of the trainer's last generation batch.

    Reads TRL's `trainer._logs` (private; TRL 1.15-1.16 keep the last generation batch there for
    `log_completions`), gathered over processes.
    """
    from medr1.answers import extract_choice
    from medr1.rewards import completion_text

    logs = trainer._logs
    out = []
    for prompt, completion in zip(logs["prompt"], logs["completion"], strict=False):
        draw = draw_by_prompt.get(_prompt_key(prompt))
        text = completion_text(completion)
        out.append((draw, extract_choice(text, draw["options"]) if draw else None, text))
    return out


def _callbacks(run: RunDir, reward_names: list[str], draw_by_prompt: dict[str, dict], sample_every: int,
               progress: bool):
    from transformers import TrainerCallback

    from medr1.letter_bias import COLLAPSE_PATIENCE, COLLAPSE_THRESHOLD, CollapseMonitor, step_answer_stats

    columns = metrics_columns(reward_names)

    class MetricsCSV(TrainerCallback):
        """Appends one row per logged step to metrics.csv (header already written by `train`), with the
        collapse monitor's columns; warns when one answer letter dominates for several logged steps."""

        trainer = None

        def __init__(self):
            self.monitor = CollapseMonitor()  # one per training: its run length must not leak between runs

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return  # the end-of-training summary log has no reward: not a step row
            row = {col: logs.get(key) for col, key in METRIC_COLUMNS.items() if key}
            row["step"] = state.global_step
            row.update({f"reward/{n}": logs.get(f"rewards/{n}/mean") for n in reward_names})
            if self.trainer is not None:
                row.update(step_answer_stats([letter for _, letter, _ in _step_answers(self.trainer, draw_by_prompt)]))
                if self.monitor.update(state.global_step, row["answer_top_share"]):
                    log.warning("answer collapse: at step %d one letter was more than %.0f%% of the answers for "
                                "%d logged steps in a row (answer_top_share in metrics.csv). The policy may be "
                                "learning a letter, not answers: see docs on shuffle_options / letter_balance.",
                                state.global_step, 100 * COLLAPSE_THRESHOLD, COLLAPSE_PATIENCE)
            with open(run.metrics_csv, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n").writerow(row)
                f.flush()
                os.fsync(f.fileno())

    class Samples(TrainerCallback):
        """Every `sample_every` steps, the step's completions with prompt id, gold and extracted letters
        and per-function rewards."""

        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero or self.trainer is None or state.global_step % sample_every:
                return
            logs = self.trainer._logs  # the last generation batch; TRL keeps it for log_completions
            lines = []
            for i, (draw, letter, text) in enumerate(_step_answers(self.trainer, draw_by_prompt)):
                rewards = {n: _num(v[i]) for n, v in logs["rewards"].items() if i < len(v)}
                lines.append(json.dumps({"step": state.global_step, "id": draw["id"] if draw else None,
                                         "gold": draw["answer"] if draw else None, "extracted": letter,
                                         "completion": text, "rewards": rewards,
                                         "advantage": _num(logs["advantages"][i]) if i < len(logs["advantages"])
                                         else None}, ensure_ascii=False))
            with open(run.samples_jsonl, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())

    class ProgressBar(TrainerCallback):
        """tqdm over optimizer steps, with the latest reward and completion length; tqdm gives the ETA."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="GRPO", unit="step",
                                dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "reward" in logs:
                self.bar.set_postfix(reward=f"{logs['reward']:.3f}",
                                     length=f"{logs.get('completions/mean_length', 0):.0f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    samples, metrics = Samples(), MetricsCSV()
    return [metrics, samples, *([ProgressBar()] if progress else [])], [metrics, samples]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def _replace_dir(tmp: Path, target: Path) -> None:
    # A directory cannot be os.replace'd over a non-empty one: move the old one aside first, so a crash
    # leaves either the old or the new directory under `target`, never a mix.
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _save_adapter(trainer, tokenizer, run: RunDir) -> None:
    tmp = run.train_dir / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # handles DeepSpeed gathering; writes only on the main process
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)
        _replace_dir(tmp, run.adapter_dir)


def _save_merged(params: Params, backend: str, trainer, tokenizer, run: RunDir) -> Path:
    if backend != "unsloth":
        return _export_merged(params, run)
    merged = run.train_dir / "merged"
    tmp = run.train_dir / f".merged.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained_merged(str(tmp), tokenizer, save_method="merged_16bit")
    _replace_dir(tmp, merged)
    return merged


def _export_merged(params: Params, run: RunDir) -> Path:
    """Merged weights from base + the saved adapter (not the live model): the export is then exactly what
    `load_model(adapter, merge_adapter=True)` gives evaluation, and a trainer's model stays untouched."""
    from medr1.models import load_model

    merged = run.train_dir / "merged"
    tmp = run.train_dir / f".merged.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model, tok = load_model(str(run.adapter_dir), device="cpu", torch_dtype=params.torch_dtype,
                            trust_remote_code=params.trust_remote_code, merge_adapter=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, merged)
    return merged


def _write_complete(run: RunDir, params: Params, steps: int, n_questions: int, n_dropped: int | None) -> None:
    """The "this training finished" marker, written last."""
    atomic_write_json(run.train_dir / COMPLETE_FILE, {
        "global_step": steps, "max_steps": params.max_steps, "num_train_epochs": params.num_train_epochs,
        "n_questions": n_questions, "n_dropped_long": n_dropped, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def _finished(run: RunDir, params: Params) -> dict | None:
    """The complete.json of a finished training that already covers `params` (nothing to do), else None."""
    try:
        done = json.loads((run.train_dir / COMPLETE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (run.adapter_dir / "adapter_config.json").is_file():
        return None
    if params.max_steps != -1:
        return done if params.max_steps <= done.get("global_step", 0) else None
    same_target = done.get("max_steps") == -1 and params.num_train_epochs <= done.get("num_train_epochs", 0)
    return done if same_target else None


def _warn_changed_params(run: RunDir, params: Params) -> None:
    try:
        before = read_params_file(run.path / "params.yaml")
    except Exception:
        return
    changed = sorted(k for k, v in params.to_dict().items()
                     if k in before and before[k] != v and k not in RESUME_SAFE_KEYS and not k.startswith("eval_"))
    if changed:
        log.warning("resuming %s with changed params %s; the run mixes two settings. Use force: true (or a new "
                    "run_name) to start over.", run.path, changed)


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
        RuntimeError: `backend: unsloth` without a CUDA GPU, or more processes than GPUs.
        RunLockedError: another live process is writing this run.
        LaunchError: a multi-GPU launch failed (with the tail of its log).

    >>> result = train(load_params("params/demo.yaml"))  # doctest: +SKIP
    >>> result.adapter_dir  # doctest: +SKIP
    PosixPath('.../runs/demo/train/adapter')
    """
    from medr1.models import check_model_spec, pick_device

    params = Params.from_dict(params.to_dict())  # re-validate: notebooks may have edited the object
    check_model_spec(params.model)
    select_backend(params.backend, cuda=pick_device(params.device) == "cuda")  # refuse before touching files
    run = RunDir(params.run_dir)
    if inside_launch():  # a worker under accelerate: the parent holds the lock and prepared the directory
        die_with_parent()  # a killed launch must not leave workers writing into the run
        return _train_local(params, run, progress=progress, reward_funcs=reward_funcs)

    check_writable(run.path)
    with run.lock("train"):
        if params.force:
            log.info("force: deleting %s", run.train_dir)
            shutil.rmtree(run.train_dir, ignore_errors=True)
        elif params.resume and (done := _finished(run, params)) is not None:
            log.info("%s already finished %d steps; nothing to do (raise max_steps or set force: true)",
                     run.path, done["global_step"])
            rows = read_metrics(run.metrics_csv)
            return TrainResult(run.path, done["global_step"], rows[-1] if rows else {}, skipped=True,
                               adapter_dir=run.adapter_dir, n_questions=done.get("n_questions"),
                               n_dropped_long=done.get("n_dropped_long"))
        elif not params.resume and (run.train_dir.exists() and any(run.train_dir.iterdir())):
            raise TrainSetupError(f"{run.train_dir} holds an earlier training and resume is false; set "
                               f"resume: true to continue it or force: true to start over")
        if params.resume and not params.force:
            _warn_changed_params(run, params)
        atomic_write_text(run.path / "params.yaml", params.to_yaml())
        if params.num_processes > 1:
            return _train_launched(params, run, progress=progress, echo=echo)
        return _train_local(params, run, progress=progress, reward_funcs=reward_funcs)


def _check_same_draws(run: RunDir, draws_hash: str, *, resuming: bool) -> None:
    """A resumed run must walk the same draws as the run it continues (same questions, same option orders,
    same order); the manifest of the interrupted run has their hash. A difference is logged, like any
    changed param: the run then mixes two data orders."""
    if not resuming:
        return
    try:
        before = json.loads(run.manifest_path.read_text())["jobs"]["train"]["data_hashes"].get("train_draws")
    except (OSError, ValueError, KeyError, TypeError):
        return
    if before and before != draws_hash:
        log.warning("resuming %s with different training draws than the interrupted run (hash %s, was %s): the "
                    "pool, seed or shuffle settings changed", run.path, draws_hash[:12], before[:12])


def _train_launched(params: Params, run: RunDir, *, progress: bool, echo) -> TrainResult:
    import torch

    from medr1.models import pick_device

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
    done = json.loads((run.train_dir / COMPLETE_FILE).read_text())
    rows = read_metrics(run.metrics_csv)
    return TrainResult(run.path, done["global_step"], rows[-1] if rows else {}, adapter_dir=run.adapter_dir,
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


def _train_local(params: Params, run: RunDir, *, progress: bool, reward_funcs) -> TrainResult:
    from transformers import PrinterCallback, set_seed

    from medr1.data import questions_hash
    from medr1.grpo_setup import build_trainer, check_effective_config, load_policy
    from medr1.models import pick_device, resolve_model_path
    from medr1.option_order import shuffle_report, training_draws
    from medr1.prepare import training_pool
    from medr1.vision import is_vision_spec

    set_seed(params.seed)
    vision = is_vision_spec(params.model)  # a VLM: (model, processor), images in the dataset (medr1.vision)

    # --- backend: decided (and refused) before anything loads -------------------------------------
    device = pick_device(params.device)
    backend = select_backend(params.backend, cuda=device == "cuda")

    # --- data: validated and decontaminated before the model loads ---------------------------------
    pool, validation, contamination = training_pool(params)
    if not pool:
        raise ValueError(f"the training pool of {params.train_sources} is empty after decontamination")

    # --- rewards -----------------------------------------------------------------------------------
    if reward_funcs is None:
        from medr1.rewards import get_reward_funcs

        reward_funcs = get_reward_funcs(list(params.reward_funcs))
    reward_names = [f.__name__ for f in reward_funcs]

    # --- resume point: logs cut back to it before anything is appended ------------------------------
    checkpoint = last_complete_checkpoint(run.train_dir) if params.resume else None
    step0 = checkpoint_step(checkpoint)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        run.train_dir.mkdir(parents=True, exist_ok=True)
        for n, path in _checkpoints(run.train_dir):
            if n > step0:  # half-written, or newer than the resume point: it would be overwritten anyway
                shutil.rmtree(path, ignore_errors=True)
        # Temp and set-aside directories of a save interrupted by a kill: never picked up, never left behind.
        for leftover in [*run.train_dir.glob(".*.tmp-*"), *run.train_dir.glob(".*.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        truncate_metrics(run.metrics_csv, step0, metrics_columns(reward_names))
        truncate_jsonl(run.samples_jsonl, step0)
        truncate_validation(run.train_dir, step0)
        (run.train_dir / COMPLETE_FILE).unlink(missing_ok=True)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    if checkpoint and 0 < params.max_steps <= step0:
        # Killed after the last checkpoint but before the final adapter was saved. transformers' Trainer,
        # resumed at max_steps, runs one step more; the last checkpoint already is the final state.
        return _finish_from_checkpoint(params, run, checkpoint, step0, pool, reward_names, is_main)

    # --- model ---------------------------------------------------------------------------------------
    path = resolve_model_path(params.model)
    changed: dict[str, Any] = {}  # what the backend changed on its own (set back to params)
    if vision:  # not yet part of the effective-config set-back of grpo_setup (text models only)
        from medr1.vision import load_vision_trl, load_vision_unsloth

        model, tokenizer, peft_config, dtype_name = (load_vision_unsloth(params, path) if backend == "unsloth"
                                                     else load_vision_trl(params, path, device))
    else:
        model, tokenizer, peft_config, dtype_name = load_policy(params, path, device=device, backend=backend,
                                                                changed=changed)

    # --- draws: the sequence of (option-shuffled) questions the trainer walks, a function of the params ---
    kept, n_dropped = fit_prompts(pool, tokenizer, template=params.prompt_template,
                                  max_prompt_length=params.max_prompt_length)
    draws = training_draws(kept, n_training_draws(params, len(kept)), seed=params.seed,
                           shuffle_options=params.shuffle_options, option_counts=params.train_option_counts)
    dataset = draws_dataset(draws, template=params.prompt_template)
    draw_by_prompt = {_prompt_key(p, q.images): {"id": q.id, "answer": q.answer, "options": q.options}
                      for p, q in zip(dataset["prompt"], draws, strict=True)}
    _check_same_draws(run, questions_hash(draws), resuming=checkpoint is not None)

    manifest_extra = {
        "backend": backend, "device": device, "dtype": dtype_name, "model_path": path,
        "n_questions": len(kept), "n_draws": len(draws), "n_dropped_long_prompts": n_dropped,
        "resumed_from": str(checkpoint or ""),
        "option_shuffle": shuffle_report(kept, seed=params.seed, shuffle_options=params.shuffle_options,
                                         option_counts=params.train_option_counts),
        "decontamination": {**{k: v for k, v in contamination.to_dict().items() if k != "removed"},
                            "n_removed": len(contamination.removed),
                            "removed_first_100": contamination.to_dict()["removed"][:100]},
        "reward_names": reward_names, "status": "running",
        **({"vision": {"lora_vision": params.lora_vision, "image_max_pixels": params.image_max_pixels,
                       "n_images": sum(len(q.images) for q in kept)}} if vision else {}),
    }
    data_hashes = {"train_pool": questions_hash(pool), "train_draws": questions_hash(draws)}
    if is_main:
        write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes, extra=manifest_extra)

    # --- trainer -----------------------------------------------------------------------------------
    config = build_grpo_config(params, run.train_dir, cuda=device == "cuda", dtype_name=dtype_name, changed=changed)
    callbacks, needs_trainer = _callbacks(run, reward_names, draw_by_prompt, params.sample_every, progress)
    monitor = make_validation_monitor(params, validation, tokenizer, run.train_dir) if is_main else None
    callbacks += [monitor] if monitor else []
    with _env(TENSORBOARD_LOGGING_DIR=str(run.train_dir / "tb")):
        trainer = build_trainer(params, model=model, tokenizer=tokenizer, peft_config=peft_config, config=config,
                                reward_funcs=reward_funcs, train_dataset=dataset, callbacks=callbacks, changed=changed)
        trainer.remove_callback(PrinterCallback)  # raw log dicts; the metrics go to metrics.csv instead
        effective, differences = check_effective_config(params, trainer, len(reward_funcs))
        manifest_extra.update(effective_grpo_config=effective, grpo_config_differences=differences,
                              grpo_config_set_back=changed)
        if is_main:
            write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes, extra=manifest_extra)
        for callback in needs_trainer:
            callback.trainer = trainer
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        elapsed = time.perf_counter() - t0

    # --- save ----------------------------------------------------------------------------------------
    _save_adapter(trainer, tokenizer, run)
    steps = trainer.state.global_step
    if trainer.accelerator.is_main_process:
        selected = adopt_best(run.train_dir, run.adapter_dir) if params.select_checkpoint == "validation" else None
        manifest_extra["selected_checkpoint"] = selected
        merged = _save_merged(params, backend, trainer, tokenizer, run) if params.merge_adapter else None
        write_manifest(run, job="train", params=params.to_dict(), data_hashes=data_hashes,
                       extra={**manifest_extra, "status": "finished", "global_step": steps,
                              "train_seconds_this_session": round(elapsed, 1),
                              "merged_dir": str(merged) if merged else None})
        _write_complete(run, params, steps, len(kept), n_dropped)
    rows = read_metrics(run.metrics_csv)
    return TrainResult(run.path, steps, rows[-1] if rows else {}, adapter_dir=run.adapter_dir,
                       resumed_from=checkpoint, n_questions=len(kept), n_dropped_long=n_dropped)


# Trainer state in a checkpoint; the rest (adapter weights and config, tokenizer) is the adapter.
CHECKPOINT_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                          "scaler.pt")


def _finish_from_checkpoint(params: Params, run: RunDir, checkpoint: Path, step: int, pool, reward_names,
                            is_main: bool) -> TrainResult:
    """Make the final adapter (and merged weights, if asked) from the last checkpoint, without training."""
    from medr1.data import questions_hash

    if is_main:
        tmp = run.train_dir / f".adapter.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns(*CHECKPOINT_STATE_FILES))
        _replace_dir(tmp, run.adapter_dir)
        selected = adopt_best(run.train_dir, run.adapter_dir) if params.select_checkpoint == "validation" else None
        merged = _export_merged(params, run) if params.merge_adapter else None
        write_manifest(run, job="train", params=params.to_dict(), data_hashes={"train_pool": questions_hash(pool)},
                       extra={"status": "finished", "global_step": step, "resumed_from": str(checkpoint),
                              "reward_names": reward_names, "finished_from_checkpoint": True,
                              "selected_checkpoint": selected,
                              "merged_dir": str(merged) if merged else None})
        _write_complete(run, params, step, len(pool), None)
    rows = read_metrics(run.metrics_csv)
    return TrainResult(run.path, step, rows[-1] if rows else {}, adapter_dir=run.adapter_dir,
                       resumed_from=checkpoint, n_questions=len(pool), n_dropped_long=None)


# --------------------------------------------------------------------------------------------------
# Command line (worker entry of `medr1.launch`, and usable directly)
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
