"""Greedy answers on the validation split while training runs, and the checkpoint they select.

Why: the collapse monitor in metrics.csv reads the step's *sampled* completions, but evaluation decodes
greedily, and a small model whose samples look diverse can still give one letter as its greedy answer.
The first balanced CPU demo did: its sampled top share stayed <= 75 % for 29 of 30 steps, yet it answered
"B" to 96 % of MedQA. Its checkpoints also swung: on the validation split cut to four options, the share of
its most frequent greedy answer was 51 % at step 10, 99 % at step 20 and 68 % at step 30. The letter prior of
a model near chance random-walks under GRPO's noisy updates, so the last step is an arbitrary draw.

So every `validation_every` optimizer steps (and at the last one) `ValidationMonitor` decodes the validation
split greedily with the evaluation template, each question under `eval_permutations` rotations of its
options (cut to `validation_option_counts`, the test sets' option counts, else the training's; questions
with fewer options are left out), and
appends accuracy, consistent accuracy, answer top share, parse rate to `train/validation.csv`. Step 0 is the
untrained policy (LoRA starts at zero), the reference for the parse rate. The adapter of the best validated
step so far is kept in `train/best_adapter/`; `select_checkpoint: validation` makes it the run's adapter.

The selection rule is fixed before any run (`selection_key`): first not collapsed (top share <= 60 %, the
demo's bar), then a parse rate no lower than the untrained policy's, then consistent accuracy, accuracy,
lower top share; the earliest step wins ties. Only validation questions (carved from the training pool by
`medr1.prepare.training_pool`, never trained on) are looked at, never test questions.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medr1.artifacts import (
    BEST_ADAPTER,
    BEST_FILE,
    VALIDATION_CSV,
    read_best,
    read_validation,
    truncate_metrics,
)
from medr1.data.option_order import cyclic_shift, eval_shifts, vary_option_counts
from medr1.generation.hf import generate
from medr1.task.answers import extract_choice
from medr1.task.letter_bias import bias_summary
from medr1.task.prompts import build_messages

log = logging.getLogger(__name__)

TOP_SHARE_LIMIT = 0.6  # a checkpoint whose most frequent answer covers more of the rows counts as collapsed
COLUMNS = ["step", "accuracy", "consistent_accuracy", "answer_top_share", "answer_entropy", "parse_rate",
           "letter_recall_std", "n_rows", "n_questions", "seconds"]


def validation_rows(questions: Sequence[Any], *, permutations: int, option_counts: Sequence[int], seed: int
                    ) -> list[tuple[str, Any]]:
    """(question id, question as asked) for every rotation of every validation question, cut to
    `option_counts` like the training draws (a fixed deal per seed, so every validation pass asks the same).

    Questions with fewer options than the smallest of `option_counts` cannot be asked that way and are left
    out: a true/false item among four-option rows is not the format validation stands for, and its "A" half
    the time would count towards the top share.
    """
    if option_counts:
        asked_as = [q for q in questions if len(q.options) >= min(option_counts)]
        if len(asked_as) < len(questions):
            log.info("validation: %d of %d questions have fewer than %d options and are not asked",
                     len(questions) - len(asked_as), len(questions), min(option_counts))
        questions = vary_option_counts(asked_as, option_counts, random.Random(f"{seed}:validation"))
    return [(q.id, cyclic_shift(q, s)) for q in questions for s in eval_shifts(q, permutations)]


def score_answers(asked: Sequence[tuple[str, Any]], texts: Sequence[str]) -> dict[str, Any]:
    """Strict verdicts (unparsed = wrong) of greedy completions, summarised like an evaluation benchmark.

    >>> from medr1.data import Question
    >>> q = Question("1", "?", {"A": "x", "B": "y"}, "A", "toy")
    >>> r = score_answers([("1", q), ("1", cyclic_shift(q, 1))], ["Answer: A", "Answer: A"])
    >>> r["accuracy"], r["consistent_accuracy"], r["answer_top_share"], r["parse_rate"]
    (0.5, 0.0, 1.0, 1.0)
    """
    letters = [extract_choice(t, q.options) for (_, q), t in zip(asked, texts, strict=True)]
    golds = [q.answer for _, q in asked]
    correct = [x == g for x, g in zip(letters, golds, strict=True)]
    bias = bias_summary([i for i, _ in asked], golds, letters, correct)
    return {"accuracy": sum(correct) / len(correct), "consistent_accuracy": bias["consistent_accuracy"],
            "answer_top_share": bias["answer_top_share"] or 0.0, "answer_entropy": bias["answer_entropy"],
            "parse_rate": sum(x is not None for x in letters) / len(letters),
            "letter_recall_std": bias["letter_recall_std"], "n_rows": len(asked), "n_questions": bias["n_questions"]}


def selection_key(row: dict[str, Any], base_parse_rate: float) -> tuple:
    """What makes a validated step better (larger is better); see the module docstring for why this order.

    >>> base = 0.8
    >>> collapsed = {"answer_top_share": 0.9, "parse_rate": 1.0, "consistent_accuracy": 0.3, "accuracy": 0.5}
    >>> balanced = {"answer_top_share": 0.5, "parse_rate": 0.9, "consistent_accuracy": 0.1, "accuracy": 0.3}
    >>> selection_key(balanced, base) > selection_key(collapsed, base)
    True
    """
    top = float(row["answer_top_share"])
    return (top <= TOP_SHARE_LIMIT, float(row["parse_rate"]) >= base_parse_rate,
            float(row["consistent_accuracy"] or 0.0), float(row["accuracy"]), -top)


def truncate_validation(train_dir: Path, step: int) -> None:
    """After a resume from the checkpoint at `step`: drop validation rows of later steps, and the best
    adapter when it came from a step the interrupted session got past (its weights are not reproducible
    from what is on disk, so it is no candidate any more)."""
    path = train_dir / VALIDATION_CSV
    if path.is_file():
        truncate_metrics(path, step, COLUMNS)
    best = read_best(train_dir)
    if best is not None and best["step"] > step:
        shutil.rmtree(train_dir / BEST_ADAPTER, ignore_errors=True)


def adopt_best(train_dir: Path, adapter_dir: Path) -> dict[str, Any] | None:
    """Make the kept best adapter the run's adapter (`select_checkpoint: validation`); returns what was
    selected, or None (with a warning) when no validated step was kept."""
    best = read_best(train_dir)
    if best is None:
        log.warning("select_checkpoint=validation, but no validated adapter was kept: the last step's adapter stays")
        return None
    tmp = adapter_dir.with_name(f".adapter.tmp-best-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(train_dir / BEST_ADAPTER, tmp, ignore=shutil.ignore_patterns(BEST_FILE))
    old = adapter_dir.with_name(f".adapter.old-best-{os.getpid()}")
    if adapter_dir.exists():
        adapter_dir.rename(old)
    tmp.rename(adapter_dir)
    shutil.rmtree(old, ignore_errors=True)
    log.info("select_checkpoint=validation: the adapter is step %d's (%s)", best["step"], best["row"])
    return best


def _append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def validation_counts(params) -> list[int]:
    """The option counts validation questions are cut to: `validation_option_counts`, else the training's.

    Why a setting of its own: validating with the test sets' counts predicts their behaviour, the
    training's mix does not. Measured on the demo's 30 validation questions, lr 2e-4, step 5: cut to 3, 4
    and 5 options, the parse rate rose over the untrained policy's (81 % vs 76 %); cut to the test sets'
    4 options, it fell (24 vs 21 unparsed of 102 rows), as it then did on MedQA.
    """
    return list(params.train_option_counts if params.validation_option_counts is None
                else params.validation_option_counts)


def make_validation_monitor(params, questions: Sequence[Any], tokenizer, train_dir: Path):
    """The `TrainerCallback` (imported lazily: transformers is heavy) for `params` and these validation
    questions, or None when `validation_every` is 0 or there are no validation questions."""
    if not params.validation_every or not questions:
        return None
    if any(q.images for q in questions):
        log.warning("validation_every: visual validation questions are not validated during training (text only)")
        return None
    from transformers import TrainerCallback

    asked = validation_rows(questions, permutations=params.eval_permutations, option_counts=validation_counts(params),
                            seed=params.seed)
    prompts = [build_messages(q, params.eval_prompt_template) for _, q in asked]

    class ValidationMonitor(TrainerCallback):
        """Greedy validation every `validation_every` steps; keeps the best step's adapter."""

        def _validate(self, model, step: int) -> dict[str, Any]:

            t0 = time.perf_counter()
            was_training = model.training
            model.eval()
            try:
                gens = generate(model, tokenizer, prompts, max_new_tokens=params.eval_max_new_tokens,
                                batch_size=params.eval_batch_size, temperature=0.0, seed=params.seed)
            finally:
                model.train(was_training)
            row = {"step": step, **score_answers(asked, [g.text for g in gens]),
                   "seconds": round(time.perf_counter() - t0, 1)}
            _append_row(train_dir / VALIDATION_CSV, row)
            log.info("validation at step %d: accuracy %.3f, top share %.3f, parse rate %.3f", step,
                     row["accuracy"], row["answer_top_share"], row["parse_rate"])
            return row

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if (state.is_world_process_zero and state.global_step == 0 and model is not None
                    and not any(r["step"] == 0 for r in read_validation(train_dir / VALIDATION_CSV))):
                self._validate(model, 0)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if not state.is_world_process_zero or model is None:
                return
            if step % params.validation_every and step != state.max_steps:
                return
            rows = read_validation(train_dir / VALIDATION_CSV)
            if any(r["step"] == step for r in rows):
                return
            row = self._validate(model, step)
            base = next((r for r in rows if r["step"] == 0), None)
            base_parse = base["parse_rate"] if base else 0.0
            best = read_best(train_dir)
            if best is None or selection_key(row, base_parse) > selection_key(best["row"], base_parse):
                target = train_dir / BEST_ADAPTER
                tmp = train_dir / f".best.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(str(tmp))  # a PEFT model saves its adapter only
                (tmp / BEST_FILE).write_text(json.dumps({"step": step, "row": row}), encoding="utf-8")
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)

    return ValidationMonitor()


__all__ = ["TOP_SHARE_LIMIT", "adopt_best", "make_validation_monitor", "read_best", "read_validation",
           "score_answers", "selection_key", "truncate_validation", "validation_rows"]
