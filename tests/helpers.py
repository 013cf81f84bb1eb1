"""Helpers shared by test modules (imported as `from helpers import ...`; tests/ is on sys.path through
conftest.py): a byte tokenizer for the tiny random model, one small-params factory, one evaluation shortcut, one
kill-at-a-checkpoint loop.

Kept out of conftest.py because they are plain functions that tests call with arguments, not fixtures, and
out of the test modules themselves so that no test module imports another.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from medr1.config import Params, load_params
from medr1.paths import REPO_ROOT
from medr1.train.checkpoints import last_complete_checkpoint

FIXTURES = REPO_ROOT / "tests" / "fixtures"


def generate_in_batches(prompts, *, batch_size: int, num_samples: int, on_batch: Callable, texts_for: Callable,
                        fail_after: int | None = None, latency_s: float = 0.0) -> list:
    """What a fake generator returns, delivered as the real ones deliver it: `Generation`s in batches of
    `batch_size`, `on_batch` after each. `texts_for(i, prompt)` gives prompt i's `num_samples` texts;
    `fail_after` batches done, a KeyboardInterrupt stands in for a kill between two batches."""
    from medr1.generation.hf import Generation

    out = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        if fail_after is not None and b >= fail_after:
            raise KeyboardInterrupt("simulated kill")
        gens = [Generation(i, texts_for(i, prompts[i]), 10, [5] * num_samples, ["stop"] * num_samples, latency_s)
                for i in range(start, min(start + batch_size, len(prompts)))]
        on_batch(gens)
        out += gens
    return out


class ByteTokenizer:
    """Bytes + 3 as ids; 0 pad, 1 bos, `eos` configurable. Enough of the HF tokenizer API for generate()."""

    pad_token_id = 0

    def __init__(self, eos=2):
        self.eos_token_id = eos

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [b + 3 for b in text.encode()]}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i in (0, 1, self.eos_token_id)))


# Fixture question sets: a training source, what it is decontaminated against, and the evaluation set.
FIXTURE_SETS = {
    # toymed (training) and toyeval (evaluation; repeats one toymed question, so decontamination has work)
    "train": dict(data_dir=str(FIXTURES / "train"), train_sources=["toymed"], decontaminate_against=["toyeval"],
                  eval_benchmarks=["toyeval"]),
    # mini_train / mini_test: the smallest set (params/smoke.yaml's shape)
    "toyqa": dict(data_dir=str(FIXTURES / "toyqa"), train_sources=["mini_train"],
                  decontaminate_against=["mini_test"], eval_benchmarks=["mini_test"]),
}

# A few GRPO steps of the embedded 135M model on CPU: seconds per step.
TINY_TRAINING = dict(model="embedded:smollm2-135m", backend="trl", device="cpu", prompt_template="letter",
                     reward_funcs=["accuracy", "answer_parsable"], num_generations=4, per_device_train_batch_size=4,
                     max_prompt_length=256, max_completion_length=8, lora_r=8, lora_alpha=16, learning_rate=1e-4,
                     max_steps=2, save_steps=1, logging_steps=1, sample_every=1, seed=0)

# Smaller still: one question of 2 completions per step, LoRA on two projections.
SMALLER_TRAINING = dict(num_generations=2, per_device_train_batch_size=2, max_prompt_length=384, lora_r=2,
                        lora_alpha=4, lora_target_modules=["q_proj", "v_proj"])


def small_params(tmp_path: Path, *, fixture: str | None = "train", training: bool = True,
                 params_file: str | Path | None = None, **changes) -> Params:
    """Params for tests: run `t` under `tmp_path/runs`, the fixture question set named `fixture` (None: the
    package defaults), `TINY_TRAINING` when `training`, then `changes` (any `Params` key).

    With `params_file`, that file (e.g. params/smoke-vision.yaml) under `tmp_path/runs` with `changes` instead."""
    if params_file is not None:
        return load_params(params_file, {"runs_dir": str(tmp_path / "runs"), **changes})
    values = dict(run_name="t", runs_dir=str(tmp_path / "runs"))
    values.update(FIXTURE_SETS[fixture] if fixture else {})
    values.update(TINY_TRAINING if training else {})
    values.update(changes)
    return Params(**values)


def run_eval(model, benchmarks, out, **kw):
    """`evaluate_model` with settings given as keywords: the package defaults (`Params`), seed 0, and `kw`
    (EvalSettings fields; adapter, progress, generate_fn and question_sets go to the call itself)."""
    from medr1.evaluation.evaluate import EvalSettings, evaluate_model

    runtime = {k: kw.pop(k) for k in ("adapter", "progress", "generate_fn", "question_sets") if k in kw}
    return evaluate_model(model, benchmarks, out, EvalSettings.from_params(None, **{"seed": 0, **kw}), **runtime)


def kill_training_after_first_checkpoint(params: Params, *, timeout: float, poll: float = 0.5,
                                         process_group: bool = False,
                                         before_kill: Callable[[Path], None] | None = None) -> Path:
    """Start `python -m medr1.train` on `params`, wait for its first complete checkpoint, call
    `before_kill(train_dir)` (e.g. sleep to a random moment), then SIGKILL it: no cleanup runs, so the lock
    and any half-written file stay as a crash leaves them. With `process_group`, the process starts its own
    session and the whole group is killed (parent, accelerate and workers, like a node loss).
    Returns the run's train directory."""
    params_file = params.run_dir.parent / f"{params.run_name}.params.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(params.to_yaml())
    train_dir = params.run_dir / "train"
    proc = subprocess.Popen([sys.executable, "-m", "medr1.train", "-f", str(params_file), "--no-progress"],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=process_group)
    try:
        deadline = time.time() + timeout
        while last_complete_checkpoint(train_dir) is None:
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.time() < deadline, f"no checkpoint within {timeout:.0f} s"
            time.sleep(poll)
        if before_kill:
            before_kill(train_dir)
    finally:
        if process_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return train_dir
