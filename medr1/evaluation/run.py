"""Stage 04 as a whole: every model of a run (base, trained) under every protocol, into `runs/<run>/eval/`.

Stands above the engine (`evaluation.evaluate`, one model into one directory) and the protocol runner
(`evaluation.protocol_eval`), which is why it is its own module: the stage orchestrates both, and neither
needs to know about it.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from medr1.data import benchmark_title
from medr1.evaluation.evaluate import EvalSettings, evaluate_model
from medr1.evaluation.protocol_eval import evaluate_params_protocols
from medr1.generation.backends import GenerateFn
from medr1.generation.vllm import vllm_session
from medr1.models.load import check_model_spec
from medr1.prepare import prepared_eval_sets
from medr1.runs import RunDir, write_manifest


def eval_label_dir(run_dir: str | Path, label: str) -> Path:
    return RunDir(run_dir).eval_dir / label



def _label_for(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("._") or "model"



def evaluate_params(params, run_dir: str | Path | None = None, *, progress: bool = True,
                    generate_fn: GenerateFn | None = None) -> dict[str, dict]:
    """Evaluate every entry of `params.eval_models` into `run_dir/eval/<label>/`, once per protocol.

    Protocol `medr1` (the `eval_*` params) writes `eval/<label>/`; any other protocol in
    `params.eval_protocol` writes `eval/<label>@<protocol>/` (`medr1.evaluation.protocol_eval.evaluate_protocol`).
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

        for _, spec, _ in jobs:  # every spec before the first evaluation: a typo in the last one costs seconds
            check_model_spec(spec)

    prepared = prepared_eval_sets(params)  # the sets preparation wrote for this run (checked by hash), if any
    settings = EvalSettings.from_params(params)
    summaries = {}
    # vLLM: one engine per base model for every job and protocol below (adapters per request), then shut down.
    with vllm_session([(spec, adapter) for _, spec, adapter in jobs]):
        for label, spec, adapter in jobs if "medr1" in params.eval_protocol else ():
            summaries[label] = evaluate_model(spec, params.eval_benchmarks, run.eval_dir / label, settings,
                                              adapter=adapter, progress=progress, generate_fn=generate_fn,
                                              question_sets=prepared)
            with contextlib.suppress(OSError):
                write_manifest(run, job=f"eval:{label}", params=params.to_dict(),
                               data_hashes=summaries[label]["data_hashes"])
        # Every other protocol (huatuo-o1, ...) into eval/<label>@<protocol>/, on its own sets and decoding.
        summaries.update(evaluate_params_protocols(params, run, jobs, progress=progress, generate_fn=generate_fn))
    return summaries



def default_eval_label(params, model: str, adapter: str | None) -> str:
    """The eval/<label> of a single evaluation: "base" for the params' own model, else the spec (and the
    adapter's folder name) made filesystem-safe."""
    if adapter is None:
        return "base" if model == params.model else _label_for(model)
    return _label_for(f"{model}+{Path(adapter).name}")



def evaluate_cli(params, *, model: str | None = None, adapter: str | None = None, out: str | Path | None = None) -> int:
    """`medr1 eval` under protocol medr1: `model` (default `params.model`) with `adapter` on
    `params.eval_benchmarks` into `out` (default `<run_dir>/eval/<label>`); prints the accuracies. With a run's
    own params (`-f runs/<run>/params.yaml`) it asks the questions that run's preparation wrote."""
    model = model or params.model
    out = Path(out) if out else RunDir(params.run_dir).eval_dir / default_eval_label(params, model, adapter)
    # The sets this run's preparation wrote, when the params are the run's (a checkpoint evaluated on the questions
    # the pipeline asked; the fit check's `fit` set exists nowhere else); otherwise the benchmarks as loaded.
    summary = evaluate_model(model, params.eval_benchmarks, out, EvalSettings.from_params(params), adapter=adapter,
                             question_sets=prepared_eval_sets(params))
    for scorer, per_bench in summary["scores"].items():
        for bench, s in per_bench.items():
            acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
            ci = "" if s["ci_low"] is None else f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
            consistent = "" if s.get("permutations", 1) <= 1 or s.get("consistent_accuracy") is None else \
                f"  consistent={100 * s['consistent_accuracy']:.1f}% over {s['n_questions']} questions"
            top = "" if s.get("answer_top_share") is None else f"  top_answer_share={100 * s['answer_top_share']:.0f}%"
            print(f"{benchmark_title(bench):>16} {scorer:>7}: {acc}{ci}  n={s['n']}  unparsed={s['unparsed']}{consistent}{top}")
            for modality, m in summary.get("by_modality", {}).get(scorer, {}).get(bench, {}).items():
                print(f"{'':>16} {'':>7}  {modality}: {100 * m['accuracy']:.1f}% [{100 * m['ci_low']:.1f}, "
                      f"{100 * m['ci_high']:.1f}]  n={m['n']}")
    print(f"predictions and summary in {out}")
    return 0
