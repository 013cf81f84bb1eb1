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
- predictions.jsonl is read and appended through `medr1.artifacts` (its one rule: one row per
  (benchmark, id, shift), a cut last line dropped, any other bad line an error).
- Every row records the strict extraction (`extracted`, `rule`, `correct`) for reading the file by eye;
  the summary is recomputed from the whole file with every scorer in `medr1.evaluation.scoring.SCORERS`
  (`medr1.evaluation.summary`), so resumed and uninterrupted evaluations give identical summaries.
- Settings are one typed object (`EvalSettings`), each field taken from one `Params` field, so a default
  lives in `medr1.config` only.
- The generator is injectable (`generate_fn`), which is how the tests exercise resume and repair in
  milliseconds without a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from medr1.artifacts import (
    PREDICTIONS,
    SETTINGS,
    SUMMARY,
    PredictionsAppender,
    read_predictions,
    row_key,
    write_summary,
)
from medr1.config import Params, ParamsError
from medr1.data import FIT_BENCHMARK, FIT_LABEL, load_benchmark, questions_hash
from medr1.data.option_order import cyclic_shift, eval_shifts
from medr1.evaluation.scoring import SCORERS, score
from medr1.evaluation.summary import generation_stats, modality_scores, score_predictions
from medr1.generation.backends import generate_fn_for, pick_backend
from medr1.generation.vllm import vllm_session
from medr1.models.base import ModelSpecError, sampling_record, weights_sha256
from medr1.models.load import check_model_spec, model_identity
from medr1.models.vision import is_vision_spec
from medr1.runs import RunDir, atomic_write_json, check_writable
from medr1.task.prompts import build_messages, get_template, prompt_identity, vision_messages

log = logging.getLogger(__name__)

# Settings that change what a completion is; resuming with any of them changed is refused. The adapter and
# the base model enter by content (sha256 of the adapter's weight files, the base model's identity), so a
# retrained adapter at the same path is evaluated afresh; `sampling_path` (backend and decode loop) is set
# only when sampling, where two paths draw differently (greedy texts are the same on all of them). Image
# resolution changes what a vision model sees.
RESUME_KEYS = ("model", "adapter", "adapter_sha256", "base_model", "template", "add_special_tokens", "split",
               "max_new_tokens", "temperature", "top_p", "sampling", "sampling_path", "num_samples", "seed",
               "image_max_pixels")
# EvalSettings field -> the Params field it comes from (Params holds the one default of each).
PARAMS_KEYS = {"template": "eval_prompt_template", "split": "eval_split", "limit": "eval_limit",
               "data_dir": "data_dir", "max_new_tokens": "eval_max_new_tokens", "batch_size": "eval_batch_size",
               "temperature": "eval_temperature", "top_p": "eval_top_p", "num_samples": "eval_num_samples",
               "permutations": "eval_permutations", "seed": "seed", "subset_seed": "eval_subset_seed",
               "backend": "eval_backend", "decode": "eval_decode", "add_special_tokens": "eval_add_special_tokens",
               "scorers": "eval_scorers", "device": "device", "torch_dtype": "torch_dtype",
               "trust_remote_code": "trust_remote_code", "image_max_pixels": "image_max_pixels", "resume": "resume",
               "force": "force"}


class EvalSettingsError(RuntimeError):
    """Existing predictions were made with other settings; resume would mix experiments."""


GenerateFn = Callable[..., list]


def prompt_hash(messages: list[dict] | str) -> str:
    """A short, stable hash of the exact prompt a question was asked with.

    >>> prompt_hash([{"role": "user", "content": "hi"}]) == prompt_hash([{"content": "hi", "role": "user"}])
    True
    """
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalSettings:
    """How one evaluation runs. No field has a default here: `from_params` takes each from `Params` (see
    `PARAMS_KEYS`), the one place defaults live, and `replace` changes a few.

    Attributes:
        template: prompt template name (`medr1.task.prompts.TEMPLATES`).
        split, data_dir: passed to `medr1.data.load_benchmark`.
        limit: N questions of each benchmark, a seeded random subset (`subset_seed`, else `seed`) kept in
            file order: a prefix would be biased where a file is sorted by answer (PubMedQA's test file).
            None: all.
        subset_seed: seed of the `limit` subset (None: `seed`); another value draws other questions.
        max_new_tokens, batch_size, temperature, top_p, num_samples, seed: decoding (see
            `medr1.generation.hf.generate`); num_samples > 1 needs temperature > 0. The vLLM backend
            schedules its own batches, so batch_size applies to the hf backend only.
        permutations: ask each question K times, its options rotated by 0..K-1 positions
            (`medr1.data.option_order.eval_shifts`); one row per (question, rotation). Raising K resumes.
        backend: "auto", "hf" or "vllm" (`medr1.generation.backends.pick_backend`).
        decode: the hf backend's loop ("compact", "hf", "static"); greedy texts are the same for all three,
            so it is part of the resume settings only when sampling (with the backend: `sampling_path`).
        add_special_tokens: tokenize the chat-rendered prompt with the tokenizer's special tokens again
            (HuatuoGPT-o1's server; `medr1.generation.hf.encode_prompts`).
        scorers: scorers for summary.json (`medr1.evaluation.scoring.SCORERS`).
        device, torch_dtype, trust_remote_code: passed to `medr1.models.load.load_model`.
        image_max_pixels: vision models: pixels per image at most, base and trained model alike, HF and vLLM.
        resume: continue existing predictions made with the same settings (else refuse if any exist).
        force: delete existing predictions and start over.

    >>> EvalSettings.from_params(None, limit=4).replace(template="letter").template
    'letter'
    """

    template: str
    split: str
    limit: int | None
    data_dir: str | Path | None
    max_new_tokens: int
    batch_size: int
    temperature: float
    top_p: float
    num_samples: int
    permutations: int
    seed: int
    subset_seed: int | None
    backend: str
    decode: str
    add_special_tokens: bool
    scorers: tuple[str, ...]
    device: str
    torch_dtype: str
    trust_remote_code: bool
    image_max_pixels: int | None
    resume: bool
    force: bool

    def __post_init__(self):

        object.__setattr__(self, "scorers", tuple(self.scorers))
        # ParamsError (a ValueError) so that `medr1 eval` reports these in one line, like any bad param.
        if self.num_samples > 1 and self.temperature == 0:
            raise ParamsError("num_samples > 1 needs temperature > 0 (greedy samples are identical)")
        if not isinstance(self.permutations, int) or self.permutations < 1:
            raise ParamsError(f"permutations must be an integer >= 1, got {self.permutations!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ParamsError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        unknown = [s for s in self.scorers if s not in SCORERS]
        if unknown:
            raise ParamsError(f"unknown scorer(s) {unknown}; choose from {sorted(SCORERS)}")
        try:
            get_template(self.template)  # unknown template names fail here, before data or model loading
        except ValueError as e:
            raise ParamsError(str(e)) from None

    @classmethod
    def from_params(cls, params=None, **changes) -> EvalSettings:
        """The evaluation settings of `params` (a `medr1.config.Params`; None: the package defaults), with
        `changes` (EvalSettings field names) on top."""
        if params is None:

            params = Params()
        unknown = sorted(set(changes) - set(PARAMS_KEYS))
        if unknown:
            raise TypeError(f"unknown evaluation setting(s) {unknown}; choose from {sorted(PARAMS_KEYS)}")
        return cls(**{**{k: getattr(params, p) for k, p in PARAMS_KEYS.items()}, **changes})

    def replace(self, **changes) -> EvalSettings:
        return dataclasses.replace(self, **changes)


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


def evaluate_model(model_spec: str, benchmarks: Sequence[str], out_dir: str | Path, settings: EvalSettings, *,
                   adapter: str | Path | None = None, progress: bool = True, generate_fn: GenerateFn | None = None,
                   question_sets: dict | None = None) -> dict:
    """Evaluate one model (optionally with a LoRA adapter) on benchmarks into `out_dir`.

    Args:
        model_spec: hub id, local path, adapter directory or `embedded:smollm2-135m`.
        benchmarks: names for `medr1.data.load_benchmark`.
        out_dir: the evaluation directory (predictions.jsonl, settings.json, summary.json).
        settings: how to evaluate (`EvalSettings.from_params(params)`).
        adapter: LoRA adapter directory applied on top of `model_spec`.
        progress: show a tqdm bar (questions/s).
        generate_fn: replaces the model backend: called as `generate_fn(prompts, max_new_tokens=...,
            batch_size=..., temperature=..., top_p=..., num_samples=..., seed=..., on_batch=...)` and
            returning `medr1.generation.hf.Generation`s (tests use a deterministic fake).
        question_sets: {benchmark: questions} already loaded (and limited) by the caller, used instead of
            `load_benchmark` for those names (`medr1.task.protocols` passes the published sets this way).

    Returns:
        The summary dict also written to summary.json.

    Raises:
        ModelSpecError: bad model/adapter path, before anything is read or written.
        EvalSettingsError: existing predictions made with other settings (without force).
        RunLockedError: another live process is evaluating into `out_dir`.

    >>> evaluate_model("embedded:smollm2-135m", ["medqa"], "runs/demo/eval/base",
    ...                EvalSettings.from_params(None, limit=4))["scores"]["strict"]["medqa"]["n"]  # doctest: +SKIP
    4
    """

    cfg = settings
    if generate_fn is None:

        check_model_spec(model_spec)  # a typo'd model or adapter path fails before data, files or weights
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():

            raise ModelSpecError(f"adapter {str(adapter)!r} has no adapter_config.json")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    adapter = str(Path(adapter).resolve()) if adapter else None
    resolved_backend = "custom" if generate_fn is not None else None
    if resolved_backend is None:

        resolved_backend = pick_backend(cfg.backend)

    decode = None if resolved_backend == "vllm" else cfg.decode  # vLLM has one loop of its own
    record = {"model": model_spec, "adapter": adapter,
              "adapter_sha256": weights_sha256(adapter) if adapter and Path(adapter).is_dir() else None,
              "base_model": model_identity(model_spec), "template": cfg.template, "add_special_tokens": cfg.add_special_tokens,
              "split": cfg.split,
              "max_new_tokens": cfg.max_new_tokens, "temperature": float(cfg.temperature),
              "top_p": float(cfg.top_p) if cfg.temperature > 0 else 1.0,
              "sampling": sampling_record(cfg.temperature, cfg.top_p), "decode": decode,
              "sampling_path": f"{resolved_backend}/{decode}" if cfg.temperature > 0 else None,
              "num_samples": cfg.num_samples,
              # Greedy decoding ignores the seed, so a different seed must not block resuming it.
              "seed": cfg.seed if cfg.temperature > 0 else None,
              "backend": resolved_backend, "batch_size": cfg.batch_size, "limit": cfg.limit,
              "subset_seed": cfg.subset_seed, "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
              "permutations": cfg.permutations,
              # Image resolution changes what a vision model sees; text models ignore it.
              "image_max_pixels": cfg.image_max_pixels if is_vision_spec(model_spec) else None}

    # One vLLM engine for the whole evaluation (and for the caller's, when it opened a session), shut down after.
    with RunDir(out_dir).lock("eval"), vllm_session():
        _check_resume(out_dir, record, resume=cfg.resume, force=cfg.force)
        atomic_write_json(out_dir / SETTINGS, record)

        # --- questions and prompts --------------------------------------------------------------
        questions, data_hashes = [], {}
        for name in benchmarks:
            qs = (list(question_sets[name]) if question_sets and name in question_sets
                  else load_benchmark(name, split=cfg.split, data_dir=cfg.data_dir, limit=cfg.limit,
                                    sample_seed=cfg.seed if cfg.subset_seed is None else cfg.subset_seed))
            data_hashes[name] = questions_hash(qs)
            ids = [q.id for q in qs]
            if len(set(ids)) != len(ids):
                dup = next(k for k, c in Counter(ids).items() if c > 1)
                raise ValueError(f"benchmark {name!r} has duplicate question id {dup!r}; ids must be unique")
            # (benchmark, question as asked, rotation): rotation 0 is the question as written.
            questions += [(name, cyclic_shift(q, s) if s else q, s) for q in qs for s in eval_shifts(q, cfg.permutations)]

        # Visual questions: images in the processor's chat format; hashed by image content, not path.
        messages = [vision_messages(q, cfg.template) if q.images else build_messages(q, cfg.template) for _, q, _ in questions]
        hashes = [prompt_hash(prompt_identity(m) if q.images else m) for m, (_, q, _) in zip(messages, questions,
                                                                                             strict=True)]

        # --- resume -----------------------------------------------------------------------------
        pred_path = out_dir / PREDICTIONS
        done = {row_key(r): r for r in read_predictions(pred_path, repair=True)}
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

                generate_fn = generate_fn_for(model_spec, cfg, resolved_backend, adapter=adapter)
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), unit="q", desc=f"eval {out_dir.name}", dynamic_ncols=True)
            appender = PredictionsAppender(pred_path)
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
                    if cfg.num_samples > 1:
                        row["completions"] = list(g.texts)
                    row.update(options=dict(q.options), gold=q.answer, prompt_tokens=g.prompt_tokens,
                               completion_tokens=g.completion_tokens[0] if cfg.num_samples == 1
                               else list(g.completion_tokens),
                               latency_s=round(g.latency_s, 4), finish_reason=g.finish_reason, template=cfg.template)
                    if g.prompt_head:  # the first token ids sent: BOS once or twice, the template's opening
                        row["prompt_first_tokens"] = list(g.prompt_head)
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
                # Passed only when set: a generator that does not know the option is never asked to apply it.
                special = {"add_special_tokens": True} if cfg.add_special_tokens else {}
                generate_fn([messages[i] for i in todo], max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                            temperature=cfg.temperature, top_p=cfg.top_p, num_samples=cfg.num_samples, seed=cfg.seed,
                            on_batch=on_batch, **special)
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
        rows = read_predictions(pred_path, repair=True)
        wanted = {(b, q.id, s) for b, q, s in questions}
        # Scored rows are exactly this call's questions and rotations (a resumed run may have used a larger
        # limit or more permutations).
        rows = [r for r in rows if row_key(r) in wanted]
        summary = {
            "model": model_spec, "adapter": adapter, "template": cfg.template, "settings": record,
            "benchmarks": list(benchmarks), "data_hashes": data_hashes, "n_questions": len(rows),
            "generated_now": len(todo), "generation_seconds_now": round(elapsed, 2),
            "questions_per_s_now": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
            "generation": generation_stats(rows),
            "scores": score_predictions(rows, cfg.scorers, seed=cfg.seed),
            **({"notes": {FIT_BENCHMARK: FIT_LABEL}} if FIT_BENCHMARK in benchmarks else {}),
        }

        if by_modality := modality_scores(rows, cfg.scorers, seed=cfg.seed):
            summary["by_modality"] = by_modality
        write_summary(out_dir, summary)
    return summary



__all__ = ["EvalSettings", "EvalSettingsError", "evaluate_model", "prompt_hash"]
