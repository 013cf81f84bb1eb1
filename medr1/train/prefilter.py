"""Informative questions: keep the training questions the starting policy neither always nor never answers.

GRPO learns from reward differences within a group. A question whose k sampled completions are all right,
or all wrong, gives every completion the same reward, hence zero advantage and no gradient: its share of
the step's compute teaches nothing (`frac_reward_zero_std` in metrics.csv counts such groups as training
goes; AlphaMed reports ~22 % informative groups on MedQA, 7 % on MedMCQA and 3 % on PubMedQA by step 40).
With `prefilter_samples: k` training first samples k completions per training question with the starting
policy (before the policy is loaded for training; once, before workers start, with several GPUs), as GRPO will (the training template, `temperature`, `top_p`, `max_completion_length`),
scores them with the `accuracy` reward against the gold answer, and keeps the questions whose pass rate is
strictly between 0 and 1. Gold answers, not a `reward_control` relabelling: both arms of an experiment
select the same way, and the random arm relabels after selection (`medr1.train.recipe`). The pool
preparation wrote (`data/train_pool.jsonl`, checked by hash) is left as it is: the filter is a function of it
and of the policy, recorded beside it, and its counts are a section of `data/data_card.md`.

Why it is built this way:
- Resumable: one line per question is appended (flushed, fsynced) to `data/prefilter.jsonl` as each
  generation batch ends, beside `data/prefilter.json`, the settings that produced them. A rerun with the
  same settings generates only the questions not yet there; with other settings it starts over (the file
  is a function of those settings, so nothing of value is lost). A line cut by a kill is dropped.
- vLLM when it is installed and a GPU is there (`medr1.generation.backends.pick_backend("auto")`), HF generation
  otherwise: the generators evaluation uses, so the same settings decode the same way.
- The generator is injectable (`generate_fn`), which is how the tests run it in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medr1.generation.backends import generate_fn_for, pick_backend
from medr1.generation.vllm import vllm_session
from medr1.runs import RunDir, atomic_write_json, atomic_write_text
from medr1.task.prompts import build_messages
from medr1.task.rewards import accuracy

log = logging.getLogger(__name__)

PREFILTER_ROWS, PREFILTER_SETTINGS = "prefilter.jsonl", "prefilter.json"
# The params the pass rates depend on: the starting policy and how GRPO samples from it.
PREFILTER_KEYS = ("model", "prompt_template", "temperature", "top_p", "max_completion_length", "prefilter_samples",
                  "seed")


def prefilter_settings(params: Any) -> dict[str, Any]:
    """What the pass rates are a function of (written to data/prefilter.json, compared on resume)."""
    return {k: getattr(params, k) for k in PREFILTER_KEYS}


def _read_rows(path: Path) -> list[dict]:
    """The rows of prefilter.jsonl; a last line cut by a kill is dropped (and rewritten away)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1 or line.endswith("\n"):
                raise ValueError(f"{path}: line {i + 1} is not JSON (only a cut last line is repaired)") from None
            path.write_text("".join(lines[:-1]), encoding="utf-8")
    return rows


def _default_generate_fn(params: Any) -> Callable[..., list]:
    """The starting policy's generator: vLLM when available, else HF (`medr1.generation.backends`)."""
    settings = SimpleNamespace(device=params.device, torch_dtype=params.torch_dtype,
                               trust_remote_code=params.trust_remote_code, decode=params.eval_decode)
    return generate_fn_for(params.model, settings, pick_backend("auto"))


def prefilter_pool(params: Any, pool: Sequence, out_dir: str | Path | None = None, *,
                   generate_fn: Callable[..., list] | None = None, batch_size: int | None = None,
                   ) -> tuple[list, dict[str, Any]]:
    """The questions of `pool` with a pass rate strictly between 0 and 1 under the starting policy.

    Args:
        params: `medr1.config.Params` (`prefilter_samples` k >= 2, model, prompt_template, temperature,
            top_p, max_completion_length, seed).
        pool: `medr1.data.Question`s (text questions; the order of the result is theirs).
        out_dir: where prefilter.jsonl / prefilter.json go (default `<run>/data`).
        generate_fn: replaces the model (same call as `medr1.evaluation.evaluate`'s `generate_fn`).
        batch_size: prompts per generation batch (default `eval_batch_size`).

    Returns:
        (kept questions, record) with record {"samples", "n_questions", "n_kept", "n_all_right",
        "n_all_wrong", "mean_pass_rate", "generated_now"}.

    Raises:
        ValueError: a visual question (not supported here), or k < 2.
    """
    k = params.prefilter_samples
    if k < 2:
        raise ValueError(f"prefilter_samples must be >= 2 to pre-filter, got {k}")
    if any(getattr(q, "images", ()) for q in pool):
        raise ValueError("the pre-filter samples text prompts only; this pool has visual questions "
                         "(set prefilter_samples: 0)")
    out = Path(out_dir) if out_dir is not None else RunDir(params.run_dir).path / "data"
    out.mkdir(parents=True, exist_ok=True)
    rows_path, settings_path = out / PREFILTER_ROWS, out / PREFILTER_SETTINGS
    settings = json.loads(json.dumps(prefilter_settings(params)))
    try:
        previous = json.loads(settings_path.read_text())
    except (OSError, ValueError):
        previous = None
    if previous != settings:
        if rows_path.exists():
            log.info("pre-filter settings changed (%s -> %s): starting over", previous, settings)
        rows_path.unlink(missing_ok=True)
        atomic_write_json(settings_path, settings)
    key = lambda q: f"{q.source}/{q.id}"  # noqa: E731
    done = {r["key"]: r for r in _read_rows(rows_path)}
    todo = [q for q in pool if key(q) not in done]
    log.info("pre-filter: %d questions, %d already sampled, %d to sample %d times", len(pool), len(pool) - len(todo),
             len(todo), k)
    if todo:
        generate_fn = generate_fn or _default_generate_fn(params)
        options = [json.dumps(q.options, ensure_ascii=False) for q in todo]
        with open(rows_path, "a", encoding="utf-8") as f:
            def on_batch(gens):
                for g in gens:
                    q = todo[g.index]
                    texts = list(g.texts) + [""] * (k - len(g.texts))  # a skipped prompt: k empty answers
                    right = accuracy(texts, answer=[q.answer] * k, options_json=[options[g.index]] * k)
                    row = {"key": key(q), "n": k, "n_correct": int(sum(right)), "pass_rate": sum(right) / k}
                    done[row["key"]] = row
                    f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())

            # vLLM: the engine is shut down when the session ends, before training loads its policy
            with vllm_session([(params.model, None)]):
                generate_fn([build_messages(q, params.prompt_template) for q in todo],
                            max_new_tokens=params.max_completion_length,
                            batch_size=batch_size or params.eval_batch_size, temperature=params.temperature,
                            top_p=params.top_p, num_samples=k, seed=params.seed, on_batch=on_batch)
        missing = [key(q) for q in todo if key(q) not in done]
        if missing:
            raise RuntimeError(f"the generator returned nothing for {len(missing)} question(s) (e.g. {missing[0]}); "
                               f"rerun to resume them")
    rates = [done[key(q)]["pass_rate"] for q in pool]
    kept = [q for q, r in zip(pool, rates, strict=True) if 0 < r < 1]
    record = {"samples": k, "n_questions": len(pool), "n_kept": len(kept), "n_all_right": sum(r == 1 for r in rates),
              "n_all_wrong": sum(r == 0 for r in rates),
              "mean_pass_rate": sum(rates) / len(rates) if rates else None, "generated_now": len(todo)}
    log.info("pre-filter kept %d of %d questions (%d always right, %d never right in %d samples)", len(kept),
             len(pool), record["n_all_right"], record["n_all_wrong"], k)
    return kept, record


CARD_HEADING = "## informative-question pre-filter (medr1.train.prefilter)"


def informative_pool(params: Any, pool: Sequence, *, generate_fn: Callable[..., list] | None = None) -> list:
    """`prefilter_pool` into the run's `data/`, its counts written as a section of `data/data_card.md`
    (replacing an earlier one); the pool as it is when `prefilter_samples` is 0.

    Raises:
        ValueError: the filter kept no question.
    """
    if not params.prefilter_samples:
        return list(pool)
    data = RunDir(params.run_dir).path / "data"
    kept, record = prefilter_pool(params, pool, data, generate_fn=generate_fn)
    card = data / "data_card.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    text = text.split(f"\n\n{CARD_HEADING}")[0].rstrip("\n")
    lines = "\n".join(f"{k:<16} {v}" for k, v in record.items())
    atomic_write_text(card, f"{text}\n\n{CARD_HEADING}\n\n```\n{lines}\n```\n")
    if not kept:
        raise ValueError(f"the pre-filter kept no training question: the starting policy answered every one of "
                         f"{record['n_questions']} always or never right in {params.prefilter_samples} samples "
                         f"({data / PREFILTER_ROWS}); set prefilter_samples: 0")
    return kept


__all__ = ["PREFILTER_KEYS", "informative_pool", "prefilter_pool", "prefilter_settings"]
