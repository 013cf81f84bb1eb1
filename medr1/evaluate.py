"""Evaluation: streamed, resumable predictions for one model on several benchmarks, scored two ways.

`evaluate_model` writes one directory per evaluated model:

    predictions.jsonl   one row per question, appended (flush + fsync) as each generation batch ends
    settings.json       what produced the predictions (model, adapter, template, decoding settings)
    summary.json        per scorer and benchmark: n, accuracy, 95 % bootstrap CI, unparsed, rule counts
    .lock               held while an evaluation writes here

Why it is built this way:
- Evaluations run for hours on real benchmarks and get killed (preemption, OOM, ^C). Predictions are
  appended per batch and fsynced, so a kill loses at most one batch. On restart, a last line cut
  mid-write is dropped and the file rewritten atomically; questions already predicted under the same
  prompt hash are skipped; no question is ever written twice.
- Resuming under different settings (another template, max_new_tokens, temperature, ...) would mix two
  experiments in one file, so it is refused with a message naming the difference, unless `force`
  (which starts the directory over).
- Prompts that do not fit the model context are kept as rows (finish_reason "prompt_too_long", no
  text): the strict scorer counts them wrong, so accuracy is never inflated by dropping hard inputs.
- Every row records the strict extraction (`extracted`, `rule`, `correct`) for reading the file by eye;
  the summary is recomputed from the whole file with every scorer in `medr1.scoring.SCORERS`, so
  resumed and uninterrupted evaluations give identical summaries.
- The generator is injectable (`generate_fn`), which is how the tests exercise resume and repair in
  milliseconds without a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medr1.runs import RunDir, atomic_write_json, atomic_write_text, check_writable

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
SETTINGS = "settings.json"
# Settings that change what a completion is; resuming with any of them changed is refused.
RESUME_KEYS = ("model", "adapter", "template", "split", "max_new_tokens", "temperature", "top_p", "num_samples",
               "seed")


class EvalSettingsError(RuntimeError):
    """Existing predictions were made with other settings (or are corrupt); resume would mix experiments."""


GenerateFn = Callable[..., list]


# --------------------------------------------------------------------------------------------------
# predictions.jsonl: read, repair, append
# --------------------------------------------------------------------------------------------------


def prompt_hash(messages: list[dict] | str) -> str:
    """A short, stable hash of the exact prompt a question was asked with.

    >>> prompt_hash([{"role": "user", "content": "hi"}]) == prompt_hash([{"content": "hi", "role": "user"}])
    True
    """
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_predictions(path: str | Path, *, repair: bool = True) -> list[dict]:
    """Rows of a predictions file, repairing the damage a kill can leave.

    A last line that does not parse (cut mid-write by kill -9) is dropped and, with `repair`, the file
    is rewritten atomically without it. A bad line anywhere else is not something a kill produces, so
    it raises rather than guessing. Duplicate (benchmark, id, shift) rows keep the first one (`shift`,
    the option rotation a question was asked with, is 0 when absent).

    Args:
        path: a predictions.jsonl file (missing = no rows).
        repair: rewrite the file when something was dropped.

    Returns:
        The parsed rows, in file order.

    Raises:
        EvalSettingsError: a line other than the last is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = raw.split("\n")
    rows, seen, dropped = [], set(), 0
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    for i in nonempty:
        try:
            row = json.loads(lines[i])
            if not isinstance(row, dict) or "id" not in row or "benchmark" not in row:
                raise ValueError("not a prediction row")
        except ValueError as e:
            if i == nonempty[-1]:
                log.warning("%s: dropping a truncated last line (%d bytes), left by an interrupted run",
                            path, len(lines[i]))
                dropped += 1
                continue
            raise EvalSettingsError(f"{path}, line {i + 1}: not a valid prediction row ({e}). This is not "
                                    f"the damage of an interrupted write; inspect the file, or rerun with "
                                    f"force to start over.") from None
        key = row_key(row)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        rows.append(row)
    if repair and (dropped or (raw and not raw.endswith("\n"))):
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def row_key(row: dict) -> tuple[str, str, int]:
    """(benchmark, id, shift): what identifies a prediction row; one question has one row per rotation."""
    return row["benchmark"], str(row["id"]), int(row.get("shift") or 0)


class _Appender:
    """Appends rows to predictions.jsonl, one flush + fsync per batch: a kill loses at most a batch."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# --------------------------------------------------------------------------------------------------
# Settings and resume
# --------------------------------------------------------------------------------------------------


def _check_resume(out_dir: Path, settings: dict, *, resume: bool, force: bool) -> None:
    """Start over (force), or make sure existing predictions were made the way we would make them."""
    predictions = out_dir / PREDICTIONS
    if force:
        for name in (PREDICTIONS, SUMMARY, SETTINGS):
            (out_dir / name).unlink(missing_ok=True)
        return
    has_rows = predictions.exists() and predictions.stat().st_size > 0
    if not has_rows:
        return
    if not resume:
        raise EvalSettingsError(f"{predictions} already holds predictions. Resume (resume: true, the default) "
                                f"to continue it, or force to start over.")
    try:
        previous = json.loads((out_dir / SETTINGS).read_text())
    except (OSError, ValueError):
        raise EvalSettingsError(f"{predictions} exists but {out_dir / SETTINGS} is missing or unreadable, so "
                                f"it cannot be checked that resuming continues the same experiment. Use "
                                f"force to start over, or another output directory.") from None
    diff = {k: (previous.get(k), settings.get(k)) for k in RESUME_KEYS if previous.get(k) != settings.get(k)}
    if diff:
        detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in ((k, *v) for k, v in diff.items()))
        raise EvalSettingsError(f"{out_dir} holds predictions made with other settings ({detail}). Resuming "
                                f"would mix two experiments in one file. Use another output directory, or "
                                f"force to discard the old predictions.")


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def score_predictions(rows: Sequence[dict], scorers: Sequence[str] = ("strict", "huatuo"), *,
                      seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per scorer and benchmark: n, accuracy, 95 % bootstrap CI, unparsed, rule counts (and more).

    With k samples per question the scorers' accuracy is the majority vote; `sample_accuracy` is the mean
    accuracy of single samples (what one sample would score on average).

    Each entry also carries the letter-bias measures of `medr1.letter_bias.bias_summary`
    (`consistent_accuracy`, `answer_top_share`, `answer_entropy`, `letter_recall_std`, `letter_recall`,
    `n_questions`, `permutations`). `accuracy` is over all rows, i.e. over every (question, rotation);
    `consistent_accuracy` is over questions, right only when right under every rotation it was asked
    with. A row a scorer leaves out of its denominator (huatuo's empty outputs) counts as not right there.

    Args:
        rows: prediction rows (see module docstring).
        scorers: names in `medr1.scoring.SCORERS`.
        seed: bootstrap seed.

    Returns:
        {scorer: {benchmark: {...}}}.
    """
    from medr1.letter_bias import bias_summary
    from medr1.scoring import score
    from medr1.stats import accuracy_ci

    rows = list(rows)
    out: dict[str, dict[str, dict]] = {}
    for scorer in scorers:
        result = score(rows, scorer)
        verdicts_by_bench: dict[str, list] = {}
        rows_by_bench: dict[str, list] = {}
        for row, v in zip(rows, result.rows, strict=True):
            verdicts_by_bench.setdefault(v.benchmark, []).append(v)
            rows_by_bench.setdefault(v.benchmark, []).append(row)
        per_bench = {}
        for bench, b in result.benchmarks.items():
            counted = [v for v in verdicts_by_bench.get(bench, []) if v.counted]
            ci = accuracy_ci([v.correct for v in counted], seed=seed)
            entry = {
                "scorer": scorer, "benchmark": bench, "n": b.n, "n_correct": b.n_correct,
                "accuracy": _finite(b.accuracy), "ci_low": _finite(ci.low), "ci_high": _finite(ci.high),
                "ci_method": f"{ci.method} 95%", "unparsed": b.unparsed, "by_rule": dict(b.by_rule),
                "n_dropped": b.n_dropped,
            }
            if b.selected is not None:
                entry.update(accuracy_first=_finite(b.accuracy_first), accuracy_last=_finite(b.accuracy_last),
                             selected=b.selected)
            if any(v.sample_letters for v in counted):
                entry["majority_vote"] = True
                hits = [letter == v.gold for v in counted for letter in v.sample_letters]
                entry["sample_accuracy"] = sum(hits) / len(hits) if hits else None
            vs = verdicts_by_bench.get(bench, [])
            entry.update(bias_summary([str(r["id"]) for r in rows_by_bench.get(bench, [])], [v.gold for v in vs],
                                      [v.letter if v.counted else None for v in vs],
                                      [v.correct and v.counted for v in vs]))
            per_bench[bench] = entry
        out[scorer] = per_bench
    return out


def _generation_stats(rows: Sequence[dict]) -> dict[str, dict]:
    stats: dict[str, dict] = {}
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        sub = [r for r in rows if r["benchmark"] == bench]
        reasons = Counter(r.get("finish_reason") for r in sub)
        stats[bench] = {
            "n": len(sub),
            "finish_reasons": dict(reasons),
            "prompt_too_long": reasons.get("prompt_too_long", 0),
            "mean_completion_tokens": sum(sum(_as_list(r.get("completion_tokens"))) / max(1, len(
                _as_list(r.get("completion_tokens")))) for r in sub) / len(sub),
            "mean_prompt_tokens": sum(r.get("prompt_tokens", 0) for r in sub) / len(sub),
        }
    return stats


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x or 0]


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def _hf_generate_fn(model_spec, *, adapter, device, torch_dtype, trust_remote_code, decode="compact") -> GenerateFn:
    """A generate function over an HF model, loaded on first call (a fully resumed run loads nothing)."""
    from medr1.generation import generate
    from medr1.models import load_model

    loaded: dict[str, Any] = {}

    def fn(prompts, **kwargs):
        if not loaded:
            # Merging folds LoRA into the weights: the same outputs up to float rounding, faster decoding.
            loaded["model"], loaded["tok"] = load_model(model_spec, adapter=adapter, device=device,
                                                        torch_dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                        merge_adapter=adapter is not None)
        from medr1.vision import is_processor

        if is_processor(loaded["tok"]):  # a vision-language model: images through its processor
            from medr1.vision_eval import generate_vision

            return generate_vision(loaded["model"], loaded["tok"], prompts, **kwargs)
        return generate(loaded["model"], loaded["tok"], prompts, decode=decode, **kwargs)

    return fn


def _vllm_generate_fn(model_spec, *, adapter, torch_dtype, trust_remote_code) -> GenerateFn:
    from medr1.generation import generate_vllm

    def fn(prompts, *, batch_size=None, **kwargs):  # vLLM schedules its own batches
        from medr1.vision import is_vision_spec

        if is_vision_spec(model_spec):
            from medr1.vision_eval import generate_vision_vllm

            return generate_vision_vllm(model_spec, prompts, adapter=adapter, torch_dtype=torch_dtype,
                                        trust_remote_code=trust_remote_code, **kwargs)
        return generate_vllm(model_spec, prompts, adapter=adapter, torch_dtype=torch_dtype,
                             trust_remote_code=trust_remote_code, **kwargs)

    return fn


def evaluate_model(
    model_spec: str,
    benchmarks: Sequence[str],
    out_dir: str | Path,
    *,
    adapter: str | Path | None = None,
    template: str = "r1",
    max_new_tokens: int = 1024,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    permutations: int = 1,
    limit: int | None = None,
    seed: int = 0,
    split: str = "test",
    data_dir: str | Path | None = None,
    backend: str = "auto",
    scorers: Sequence[str] = ("strict", "huatuo"),
    device: str = "auto",
    decode: str = "compact",
    torch_dtype: str = "auto",
    trust_remote_code: bool = False,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    generate_fn: GenerateFn | None = None,
    question_sets: dict | None = None,
) -> dict:
    """Evaluate one model (optionally with a LoRA adapter) on benchmarks into `out_dir`.

    Args:
        model_spec: hub id, local path, adapter directory or `embedded:smollm2-135m`.
        benchmarks: names for `medr1.data.load_benchmark`.
        out_dir: the evaluation directory (predictions.jsonl, settings.json, summary.json).
        adapter: LoRA adapter directory applied on top of `model_spec`.
        template: prompt template name (`medr1.prompts.TEMPLATES`).
        max_new_tokens, batch_size, temperature, top_p, num_samples, seed: decoding (see
            `medr1.generation.generate`); num_samples > 1 needs temperature > 0.
        permutations: ask each question K times, its options rotated by 0..K-1 positions
            (`medr1.option_order.eval_shifts`: capped at the option count; questions whose options refer
            to other options are asked once). One row per (question, rotation), `shift` in each row.
            Raising K resumes: rotations already predicted are kept.
        limit: N questions of each benchmark, a seeded random subset (`seed`) kept in file order: a prefix
            would be biased where a file is sorted by answer (PubMedQA's test file).
        split, data_dir: passed to `load_benchmark`.
        backend: "auto", "hf" or "vllm" (`medr1.generation.pick_backend`).
        scorers: scorers for summary.json.
        device, torch_dtype, trust_remote_code: passed to `load_model`.
        decode: the hf backend's loop ("compact", "hf", "static"; `medr1.generation.generate`). Greedy texts
            are the same for all three, so it is not part of the resume settings.
        resume: continue existing predictions made with the same settings (else refuse if any exist).
        force: delete existing predictions and start over.
        progress: show a tqdm bar (questions/s).
        generate_fn: replaces the model backend: called as `generate_fn(prompts, max_new_tokens=...,
            batch_size=..., temperature=..., top_p=..., num_samples=..., seed=..., on_batch=...)` and
            returning `medr1.generation.Generation`s (tests use a deterministic fake).
        question_sets: {benchmark: questions} already loaded (and limited) by the caller, used instead of
            `load_benchmark` for those names (`medr1.protocols` passes the published sets this way).

    Returns:
        The summary dict also written to summary.json.

    Raises:
        ParamsError, ModelSpecError: bad settings or model/adapter path, before anything is read or written.
        EvalSettingsError: existing predictions made with other settings (without force).
        RunLockedError: another live process is evaluating into `out_dir`.

    >>> evaluate_model("embedded:smollm2-135m", ["medqa"], "runs/demo/eval/base", limit=4,
    ...                max_new_tokens=64)["scores"]["strict"]["medqa"]["n"]  # doctest: +SKIP
    4
    """
    from medr1.config import ParamsError
    from medr1.data import load_benchmark, questions_hash
    from medr1.option_order import cyclic_shift, eval_shifts
    from medr1.prompts import build_messages, get_template
    from medr1.scoring import SCORERS, score

    # ParamsError (a ValueError) so that `medr1 eval` reports these in one line, like any bad param.
    if num_samples > 1 and temperature == 0:
        raise ParamsError("num_samples > 1 needs temperature > 0 (greedy samples are identical)")
    if not isinstance(permutations, int) or permutations < 1:
        raise ParamsError(f"permutations must be an integer >= 1, got {permutations!r}")
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise ParamsError(f"unknown scorer(s) {unknown}; choose from {sorted(SCORERS)}")
    try:
        get_template(template)  # unknown template names fail here, before data or model loading
    except ValueError as e:
        raise ParamsError(str(e)) from None
    if generate_fn is None:
        from medr1.models import check_model_spec

        check_model_spec(model_spec)  # a typo'd model or adapter path fails before data, files or weights
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            from medr1.models import ModelSpecError

            raise ModelSpecError(f"adapter {str(adapter)!r} has no adapter_config.json")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    adapter = str(Path(adapter).resolve()) if adapter else None
    resolved_backend = "custom" if generate_fn is not None else None
    if resolved_backend is None:
        from medr1.generation import pick_backend

        resolved_backend = pick_backend(backend)
    settings = {"model": model_spec, "adapter": adapter, "template": template, "split": split,
                "max_new_tokens": max_new_tokens, "temperature": float(temperature),
                "top_p": float(top_p) if temperature > 0 else 1.0, "num_samples": num_samples,
                # Greedy decoding ignores the seed, so a different seed must not block resuming it.
                "seed": seed if temperature > 0 else None,
                "backend": resolved_backend, "batch_size": batch_size, "limit": limit, "data_dir":
                str(data_dir) if data_dir else None, "permutations": permutations}

    with RunDir(out_dir).lock("eval"):
        _check_resume(out_dir, settings, resume=resume, force=force)
        atomic_write_json(out_dir / SETTINGS, settings)

        # --- questions and prompts --------------------------------------------------------------
        questions, data_hashes = [], {}
        for name in benchmarks:
            qs = (list(question_sets[name]) if question_sets and name in question_sets
                  else load_benchmark(name, split=split, data_dir=data_dir, limit=limit, sample_seed=seed))
            data_hashes[name] = questions_hash(qs)
            ids = [q.id for q in qs]
            if len(set(ids)) != len(ids):
                dup = next(k for k, c in Counter(ids).items() if c > 1)
                raise ValueError(f"benchmark {name!r} has duplicate question id {dup!r}; ids must be unique")
            # (benchmark, question as asked, rotation): rotation 0 is the question as written.
            questions += [(name, cyclic_shift(q, s) if s else q, s) for q in qs for s in eval_shifts(q, permutations)]
        from medr1.vision import prompt_identity, vision_messages

        # Visual questions: images in the processor's chat format; hashed by image content, not path.
        messages = [vision_messages(q, template) if q.images else build_messages(q, template) for _, q, _ in questions]
        hashes = [prompt_hash(prompt_identity(m) if q.images else m) for m, (_, q, _) in zip(messages, questions,
                                                                                             strict=True)]

        # --- resume -----------------------------------------------------------------------------
        pred_path = out_dir / PREDICTIONS
        done = {row_key(r): r for r in read_predictions(pred_path)}
        stale = [(k, r) for (b, q, s), h in zip(questions, hashes, strict=True)
                 if (k := (b, q.id, s)) in done and (r := done[k]).get("prompt_hash") != h]
        if stale:
            (b, qid, _), _ = stale[0]
            raise EvalSettingsError(f"{len(stale)} existing prediction(s) in {pred_path} were made from a "
                                    f"different prompt (e.g. {b}/{qid}): the question data or the template text "
                                    f"changed. Use force to start over, or another output directory.")
        todo = [i for i, (b, q, s) in enumerate(questions) if (b, q.id, s) not in done]
        log.info("%s: %d question(s), %d already predicted, %d to generate", out_dir, len(questions),
                 len(questions) - len(todo), len(todo))

        # --- generate, streaming rows to disk ---------------------------------------------------
        started = time.perf_counter()
        if todo:
            if generate_fn is None:
                kw = {"adapter": adapter, "torch_dtype": torch_dtype, "trust_remote_code": trust_remote_code}
                generate_fn = (_vllm_generate_fn(model_spec, **kw) if resolved_backend == "vllm"
                               else _hf_generate_fn(model_spec, device=device, decode=decode, **kw))
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), unit="q", desc=f"eval {out_dir.name}", dynamic_ncols=True)
            appender = _Appender(pred_path)
            written = set()

            def on_batch(gens):
                rows = []
                for g in gens:
                    i = todo[g.index]
                    bench, q, shift = questions[i]
                    if (bench, q.id, shift) in written:
                        continue
                    row = {"id": q.id, "benchmark": bench, "shift": shift, "prompt_hash": hashes[i],
                           "completion": g.texts[0]}
                    if num_samples > 1:
                        row["completions"] = list(g.texts)
                    row.update(options=dict(q.options), gold=q.answer, prompt_tokens=g.prompt_tokens,
                               completion_tokens=g.completion_tokens[0] if num_samples == 1
                               else list(g.completion_tokens),
                               latency_s=round(g.latency_s, 4), finish_reason=g.finish_reason, template=template)
                    # MMLU's subject / MMLU-Pro's category, for per-subject accuracy in results.md.
                    category = q.meta.get("subject") or q.meta.get("category")
                    if isinstance(category, str):
                        row["category"] = category
                    if q.images:  # visual questions: per-modality accuracy, and the images for figures
                        row.update(images=list(q.images), **({"modality": q.meta["modality"]}
                                                             if q.meta.get("modality") else {}))
                    rows.append(row)
                if not rows:
                    return
                verdicts = score(rows, "strict").rows
                for row, v in zip(rows, verdicts, strict=True):
                    row.update(extracted=v.letter, rule=v.rule, correct=bool(v.correct))
                appender.write(rows)
                written.update(row_key(r) for r in rows)
                if bar is not None:
                    bar.update(len(rows))

            try:
                generate_fn([messages[i] for i in todo], max_new_tokens=max_new_tokens, batch_size=batch_size,
                            temperature=temperature, top_p=top_p, num_samples=num_samples, seed=seed,
                            on_batch=on_batch)
            finally:
                appender.close()
                if bar is not None:
                    bar.close()
            missing = len(todo) - len(written)
            if missing:
                raise RuntimeError(f"the generator returned no completion for {missing} question(s); "
                                   f"rerun to resume them")
        elapsed = time.perf_counter() - started

        # --- score the whole file ---------------------------------------------------------------
        rows = read_predictions(pred_path)
        wanted = {(b, q.id, s) for b, q, s in questions}
        # Scored rows are exactly this call's questions and rotations (a resumed run may have used a larger
        # limit or more permutations).
        rows = [r for r in rows if row_key(r) in wanted]
        summary = {
            "model": model_spec, "adapter": adapter, "template": template, "settings": settings,
            "benchmarks": list(benchmarks), "data_hashes": data_hashes, "n_questions": len(rows),
            "generated_now": len(todo), "generation_seconds_now": round(elapsed, 2),
            "questions_per_s_now": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
            "generation": _generation_stats(rows),
            "scores": score_predictions(rows, scorers, seed=seed),
        }
        from medr1.vision_eval import modality_scores

        if by_modality := modality_scores(rows, scorers, seed=seed):
            summary["by_modality"] = by_modality
        atomic_write_json(out_dir / SUMMARY, summary)
    return summary


evaluate = evaluate_model  # the name in docs/ARCHITECTURE.md


def eval_label_dir(run_dir: str | Path, label: str) -> Path:
    return RunDir(run_dir).eval_dir / label


def _label_for(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("._") or "model"


def evaluate_params(params, run_dir: str | Path | None = None, *, progress: bool = True,
                    generate_fn: GenerateFn | None = None) -> dict[str, dict]:
    """Evaluate every entry of `params.eval_models` into `run_dir/eval/<label>/`, once per protocol.

    Protocol `medr1` (the `eval_*` params) writes `eval/<label>/`; any other protocol in
    `params.eval_protocol` writes `eval/<label>@<protocol>/` (`medr1.protocols.evaluate_protocol`).
    "base" is `params.model`; "trained" is `params.model` plus this run's adapter (`train/adapter`);
    anything else is a model spec (its label is the spec made filesystem-safe).

    Args:
        params: a `medr1.config.Params`.
        run_dir: the run directory (default `params.run_dir`).
        progress, generate_fn: as in `evaluate_model`.

    Returns:
        {label: summary}.

    >>> from medr1.config import load_params
    >>> evaluate_params(load_params(None, ["eval_limit=4"]))  # doctest: +SKIP
    """
    from medr1.runs import write_manifest

    run = RunDir(run_dir if run_dir is not None else params.run_dir)
    jobs = []
    for entry in params.eval_models:
        if entry == "base":
            jobs.append(("base", params.model, None))
        elif entry == "trained":
            if not (run.adapter_dir / "adapter_config.json").is_file():
                raise FileNotFoundError(f"eval_models lists 'trained' but {run.adapter_dir} holds no adapter "
                                        f"(adapter_config.json). Train first, or drop 'trained' from eval_models.")
            jobs.append(("trained", params.model, str(run.adapter_dir)))
        else:
            jobs.append((_label_for(entry), entry, None))
    if generate_fn is None:
        from medr1.models import check_model_spec

        for _, spec, _ in jobs:  # every spec before the first evaluation: a typo in the last one costs seconds
            check_model_spec(spec)
    summaries = {}
    for label, spec, adapter in jobs if "medr1" in params.eval_protocol else ():
        summaries[label] = evaluate_model(
            spec, params.eval_benchmarks, run.eval_dir / label, adapter=adapter,
            template=params.eval_prompt_template, max_new_tokens=params.eval_max_new_tokens,
            batch_size=params.eval_batch_size, temperature=params.eval_temperature, top_p=params.eval_top_p,
            num_samples=params.eval_num_samples, permutations=params.eval_permutations, limit=params.eval_limit,
            seed=params.seed, split=params.eval_split,
            data_dir=params.data_dir, backend=params.eval_backend, scorers=params.eval_scorers,
            device=params.device, decode=params.eval_decode, torch_dtype=params.torch_dtype, trust_remote_code=params.trust_remote_code,
            resume=params.resume, force=params.force, progress=progress, generate_fn=generate_fn)
        with contextlib.suppress(OSError):
            write_manifest(run, job=f"eval:{label}", params=params.to_dict(),
                           data_hashes=summaries[label]["data_hashes"])
    # Every other protocol (huatuo-o1, ...) into eval/<label>@<protocol>/, on its own sets and decoding.
    from medr1.protocol_eval import evaluate_params_protocols

    summaries.update(evaluate_params_protocols(params, run, jobs, progress=progress, generate_fn=generate_fn))
    return summaries


def evaluate_cli(args) -> int:
    """`medr1 eval`: the argparse namespace of medr1.cli's eval subcommand → `evaluate_model`; prints the
    strict and huatuo accuracies per benchmark."""
    summary = evaluate_model(
        args.model, [b.strip() for b in args.benchmarks.split(",") if b.strip()], args.out, adapter=args.adapter,
        template=args.template, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        temperature=args.temperature, top_p=args.top_p, num_samples=args.num_samples,
        permutations=getattr(args, "permutations", 1), limit=args.limit,
        seed=args.seed, split=args.split, data_dir=args.data_dir, backend=args.backend,
        scorers=[s.strip() for s in args.scorers.split(",") if s.strip()], force=getattr(args, "force", False))
    for scorer, per_bench in summary["scores"].items():
        for bench, s in per_bench.items():
            acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
            ci = "" if s["ci_low"] is None else f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
            consistent = "" if s.get("permutations", 1) <= 1 or s.get("consistent_accuracy") is None else \
                f"  consistent={100 * s['consistent_accuracy']:.1f}% over {s['n_questions']} questions"
            top = "" if s.get("answer_top_share") is None else f"  top_answer_share={100 * s['answer_top_share']:.0f}%"
            print(f"{bench:>16} {scorer:>7}: {acc}{ci}  n={s['n']}  unparsed={s['unparsed']}{consistent}{top}")
            for modality, m in summary.get("by_modality", {}).get(scorer, {}).get(bench, {}).items():
                print(f"{'':>16} {'':>7}  {modality}: {100 * m['accuracy']:.1f}% [{100 * m['ci_low']:.1f}, "
                      f"{100 * m['ci_high']:.1f}]  n={m['n']}")
    print(f"predictions and summary in {args.out}")
    return 0


__all__ = ["EvalSettingsError", "evaluate", "evaluate_cli", "evaluate_model", "evaluate_params", "prompt_hash",
           "read_predictions", "score_predictions"]
