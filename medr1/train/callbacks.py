"""Trainer callbacks of a GRPO run: metrics.csv (one row per logged step, with the collapse monitor),
samples.jsonl (sampled completions with their rewards) and a progress bar.

Module-level classes, each told what it writes when it is built (`training_callbacks`), so that tests and
benchmarks can build them without a training. `metrics.csv` has fixed columns so that figures read it
without TensorBoard; its rows are appended and fsynced one by one, so a kill loses at most the row being
written (`medr1.train.checkpoints.truncate_metrics` drops a cut line on resume).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medr1.task.answers import extract_choice
from medr1.task.letter_bias import COLLAPSE_PATIENCE, COLLAPSE_THRESHOLD, CollapseMonitor, step_answer_stats
from medr1.task.rewards import completion_text

log = logging.getLogger(__name__)

# Fixed metrics.csv columns (then one `reward/<name>` per reward function), and the TRL log key of each.
METRIC_COLUMNS = {
    "step": None, "epoch": "epoch", "loss": "loss", "reward": "reward", "reward_std": "reward_std",
    "frac_reward_zero_std": "frac_reward_zero_std", "kl": "kl", "entropy": "entropy",
    "completion_length": "completions/mean_length", "clipped_ratio": "completions/clipped_ratio",
    "learning_rate": "learning_rate", "grad_norm": "grad_norm", "step_time": "step_time",
    # the collapse monitor (medr1.task.letter_bias), computed by the MetricsCSV callback from the step's answers
    "answer_top_share": None, "answer_entropy": None,
}


def metrics_columns(reward_names: Sequence[str]) -> list[str]:
    """metrics.csv header: the fixed columns, then `reward/<name>` per reward function."""
    return [*METRIC_COLUMNS, *(f"reward/{n}" for n in reward_names)]



def prompt_key(prompt: Any, images: Sequence[str] = ()) -> str:
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



def step_answers(trainer, draw_by_prompt: dict[str, dict]) -> list[tuple[dict | None, str | None, Any]]:
    """(draw, extracted letter, completion) for each completion of the trainer's last generation batch.

    Reads TRL's `trainer._logs` (private; TRL 1.15-1.16 keep the last generation batch there for
    `log_completions`), gathered over processes.
    """

    logs = trainer._logs
    out = []
    for prompt, completion in zip(logs["prompt"], logs["completion"], strict=False):
        draw = draw_by_prompt.get(prompt_key(prompt))
        text = completion_text(completion)
        out.append((draw, extract_choice(text, draw["options"]) if draw else None, text))
    return out



class MetricsCSV(TrainerCallback):
    """Appends one row per logged step to metrics.csv (header already written by `medr1.train.checkpoints.cut_back_to`),
    with the collapse monitor's columns; warns when one answer letter dominates for several logged steps.

    Args:
        path: the run's metrics.csv.
        reward_names: the reward functions' names (one `reward/<name>` column each).
        draw_by_prompt: `prompt_key` -> draw (id, answer, options), to read the step's answers.
    """

    trainer = None  # set once the trainer exists: the step's answers are read from it

    def __init__(self, path: str | os.PathLike, reward_names: Sequence[str], draw_by_prompt: dict[str, dict]):
        self.path, self.reward_names, self.draw_by_prompt = Path(path), list(reward_names), draw_by_prompt
        self.columns = metrics_columns(reward_names)
        self.monitor = CollapseMonitor()  # one per training: its run length must not leak between runs

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return  # the end-of-training summary log has no reward: not a step row
        row = {col: logs.get(key) for col, key in METRIC_COLUMNS.items() if key}
        row["step"] = state.global_step
        row.update({f"reward/{n}": logs.get(f"rewards/{n}/mean") for n in self.reward_names})
        if self.trainer is not None:
            row.update(step_answer_stats([letter for _, letter, _ in step_answers(self.trainer, self.draw_by_prompt)]))
            if self.monitor.update(state.global_step, row["answer_top_share"]):
                log.warning("answer collapse: at step %d one letter was more than %.0f%% of the answers for "
                            "%d logged steps in a row (answer_top_share in metrics.csv). The policy may be "
                            "learning a letter, not answers: see docs on shuffle_options / letter_balance.",
                            state.global_step, 100 * COLLAPSE_THRESHOLD, COLLAPSE_PATIENCE)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerow(row)
            f.flush()
            os.fsync(f.fileno())


class Samples(TrainerCallback):
    """Every `sample_every` steps, the step's completions with prompt id, gold and extracted letters and
    per-function rewards, appended to samples.jsonl."""

    trainer = None  # set once the trainer exists

    def __init__(self, path: str | os.PathLike, draw_by_prompt: dict[str, dict], sample_every: int):
        self.path, self.draw_by_prompt, self.sample_every = Path(path), draw_by_prompt, sample_every

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.trainer is None or state.global_step % self.sample_every:
            return
        logs = self.trainer._logs  # the last generation batch; TRL keeps it for log_completions
        lines = []
        for i, (draw, letter, text) in enumerate(step_answers(self.trainer, self.draw_by_prompt)):
            rewards = {n: _num(v[i]) for n, v in logs["rewards"].items() if i < len(v)}
            lines.append(json.dumps({"step": state.global_step, "id": draw["id"] if draw else None,
                                     "gold": draw["answer"] if draw else None, "extracted": letter,
                                     "completion": text, "rewards": rewards,
                                     "advantage": _num(logs["advantages"][i]) if i < len(logs["advantages"])
                                     else None}, ensure_ascii=False))
        with open(self.path, "a", encoding="utf-8") as f:
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


def training_callbacks(run, reward_names: Sequence[str], draw_by_prompt: dict[str, dict], sample_every: int,
                       progress: bool) -> tuple[list[TrainerCallback], list[TrainerCallback]]:
    """(callbacks for the trainer, those that need `.trainer` set once it is built) for `run` (a `RunDir`)."""
    metrics = MetricsCSV(run.metrics_csv, reward_names, draw_by_prompt)
    samples = Samples(run.samples_jsonl, draw_by_prompt, sample_every)
    return [metrics, samples, *([ProgressBar()] if progress else [])], [metrics, samples]


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
