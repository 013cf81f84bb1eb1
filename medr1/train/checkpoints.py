"""Checkpoint and resume bookkeeping of a training run: which `checkpoint-N/` is complete, cutting the logs
back to it, the final adapter and merged export written atomically, and the "finished" marker.

Why it is its own module: a run killed at any moment (kill -9 included) must resume from the last
*complete* checkpoint. `transformers`' own `get_last_checkpoint` takes the newest folder even when it is
half written, so `last_complete_checkpoint` checks that `trainer_state.json` (written last) parses and names
the step, and that the weights file is whole. `metrics.csv` and `samples.jsonl` are cut back to that step
before anything is appended, so they hold each step exactly once. Directories are replaced by rename
(`replace_dir`), so a crash leaves the old or the new adapter, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from medr1.artifacts import truncate_metrics, truncate_samples
from medr1.config import Params
from medr1.data import questions_hash
from medr1.models.load import load_model
from medr1.runs import TRAIN_SETTINGS_FILE, RunDir, atomic_write_json, write_manifest
from medr1.train.validation import adopt_best, truncate_validation
from medr1.training_settings import training_settings

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Weight files a finished `save_pretrained` leaves in a checkpoint (LoRA adapter first).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin")
COMPLETE_FILE = "complete.json"  # written last, after the final adapter: "this training finished"
CHECKPOINT_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                          "scaler.pt")



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


def list_checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    if not train_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in train_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(train_dir: str | os.PathLike) -> Path | None:
    """The newest complete `checkpoint-N/` under `train_dir`, skipping half-written ones, or None.

    >>> last_complete_checkpoint("/nonexistent") is None
    True
    """
    for _, path in reversed(list_checkpoints(Path(train_dir))):
        if is_complete_checkpoint(path):
            return path
    return None


def checkpoint_step(path: str | os.PathLike | None) -> int:
    """N of `checkpoint-N` (0 for None)."""
    return int(CHECKPOINT_RE.match(Path(path).name).group(1)) if path else 0


def cut_back_to(run: RunDir, step: int, columns: Sequence[str]) -> None:
    """Prepare `run` to continue from checkpoint `step` (0: from scratch): later or half-written checkpoints,
    leftovers of an interrupted save, log rows after `step` and the finished marker are removed."""
    run.train_dir.mkdir(parents=True, exist_ok=True)
    for n, path in list_checkpoints(run.train_dir):
        if n > step:  # half-written, or newer than the resume point: it would be overwritten anyway
            shutil.rmtree(path, ignore_errors=True)
    # Temp and set-aside directories of a save interrupted by a kill: never picked up, never left behind.
    for leftover in [*run.train_dir.glob(".*.tmp-*"), *run.train_dir.glob(".*.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    truncate_metrics(run.metrics_csv, step, columns)
    truncate_samples(run.samples_jsonl, step)
    truncate_validation(run.train_dir, step)
    (run.train_dir / COMPLETE_FILE).unlink(missing_ok=True)


def finished_training(run: RunDir, params: Params) -> dict | None:
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


def record_training_settings(run: RunDir, params: Params) -> None:
    """train/settings.json: the model-shaping params this training starts with (`changed_training_settings`
    compares a later call's with them)."""
    run.train_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.train_dir / TRAIN_SETTINGS_FILE, training_settings(params))


def check_same_draws(run: RunDir, draws_hash: str, *, resuming: bool) -> None:
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


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def replace_dir(tmp: Path, target: Path) -> None:
    # A directory cannot be os.replace'd over a non-empty one: move the old one aside first, so a crash
    # leaves either the old or the new directory under `target`, never a mix.
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_adapter(trainer, tokenizer, run: RunDir) -> None:
    tmp = run.train_dir / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # handles DeepSpeed gathering; writes only on the main process
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)
        replace_dir(tmp, run.adapter_dir)


def save_merged(params: Params, backend: str, trainer, tokenizer, run: RunDir) -> Path:
    if backend != "unsloth":
        return export_merged(params, run)
    merged = run.train_dir / "merged"
    tmp = run.train_dir / f".merged.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained_merged(str(tmp), tokenizer, save_method="merged_16bit")
    replace_dir(tmp, merged)
    return merged


def export_merged(params: Params, run: RunDir) -> Path:
    """Merged weights from base + the saved adapter (not the live model): the export is then exactly what
    `load_model(adapter, merge_adapter=True)` gives evaluation, and a trainer's model stays untouched."""

    merged = run.train_dir / "merged"
    tmp = run.train_dir / f".merged.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model, tok = load_model(str(run.adapter_dir), device="cpu", torch_dtype=params.torch_dtype,
                            trust_remote_code=params.trust_remote_code, merge_adapter=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    replace_dir(tmp, merged)
    return merged


def write_complete(run: RunDir, params: Params, steps: int, n_questions: int, n_dropped: int | None) -> None:
    """The "this training finished" marker, written last."""
    atomic_write_json(run.train_dir / COMPLETE_FILE, {
        "global_step": steps, "max_steps": params.max_steps, "num_train_epochs": params.num_train_epochs,
        "n_questions": n_questions, "n_dropped_long": n_dropped, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})



def finish_from_checkpoint(params: Params, run: RunDir, checkpoint: Path, pool, reward_names: Sequence[str]) -> None:
    """Make the final adapter (and merged weights, if asked) from the last checkpoint, without training: for a
    run killed after its last checkpoint but before its final adapter was saved."""

    step = checkpoint_step(checkpoint)
    tmp = run.train_dir / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns(*CHECKPOINT_STATE_FILES))
    replace_dir(tmp, run.adapter_dir)
    selected = adopt_best(run.train_dir, run.adapter_dir) if params.select_checkpoint == "validation" else None
    merged = export_merged(params, run) if params.merge_adapter else None
    write_manifest(run, job="train", params=params.to_dict(), data_hashes={"train_pool": questions_hash(pool)},
                   extra={"status": "finished", "global_step": step, "resumed_from": str(checkpoint),
                          "reward_names": list(reward_names), "finished_from_checkpoint": True,
                          "selected_checkpoint": selected,
                          "merged_dir": str(merged) if merged else None})
    write_complete(run, params, step, len(pool), None)
