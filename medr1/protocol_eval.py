"""Running a protocol (`medr1.protocols`): one model, every seed, and a summary that says what ran.

Kept apart from the protocol definitions so that reading what a protocol *is* (sets, prompt, decoding,
scorer, comparability) needs no evaluation machinery, and results and config can import it cheaply.

A sampled protocol (HuatuoGPT-o1's temperature 0.5) gives a different accuracy per seed. Their tables
report one sample; we run `eval_seeds` seeds into `seed-<s>/` and report the mean over seeds with the
seeds' standard deviation (decoding noise) beside a bootstrap interval over questions (question
sampling), so a reader can tell a difference between models from a lucky seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medr1.protocols import (
    COMPARABLE,
    Protocol,
    decoding,
    dry_run,
    get_protocol,
    limited,
    load_protocol_set,
    protocol_record,
)


def evaluate_protocol(model_spec: str, protocol: Protocol | str, benchmarks: Sequence[str], out_dir: str | Path,
                      settings: Any, *, eval_seeds: int, eval_file=None, hub: bool | None = None, hub_loader=None,
                      adapter: str | None = None, progress: bool = True, generate_fn=None) -> dict:
    """Evaluate one model under a protocol into `out_dir`; sampled protocols once per seed.

    A greedy protocol writes one evaluation (`medr1.evaluate.evaluate_model`) into `out_dir`; a sampled one
    writes `out_dir/seed-<s>/` for `eval_seeds` seeds (settings.seed, +1, ...) and, in `out_dir/summary.json`,
    per scorer and benchmark the mean accuracy over seeds with their standard deviation, min and max, and a
    95 % bootstrap interval over questions of each question's mean correctness (the seeds' spread is the
    decoding noise; the interval is the question sampling). Both summaries carry `protocol` (the record
    of `dry_run`), from which `medr1.results` decides comparability.

    Args:
        settings: a `medr1.evaluate.EvalSettings`; the protocol's own template and decoding replace its
            (`medr1.protocols.decoding`), its limit, seed, data_dir, scorers and backend are used as they are.
    """
    from medr1.artifacts import read_predictions, write_summary
    from medr1.evaluate import evaluate_model

    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    fallback = SimpleNamespace(eval_prompt_template=settings.template, eval_temperature=settings.temperature,
                               eval_top_p=settings.top_p, eval_max_new_tokens=settings.max_new_tokens)
    dec = decoding(protocol, fallback)
    seed, limit, scorers = settings.seed, settings.limit, settings.scorers
    sets = {b: load_protocol_set(protocol, b, data_dir=settings.data_dir, eval_file=eval_file, hub=hub,
                                 hub_loader=hub_loader) for b in benchmarks}
    question_sets = {b: limited(s, limit, seed) for b, s in sets.items()}
    sampled = dec["temperature"] > 0
    seeds = [seed + i for i in range(eval_seeds)] if sampled else [seed]
    record = protocol_record(protocol, dec, sets, limit, len(seeds))
    out = Path(out_dir)
    per_seed = {}
    from medr1.backends import vllm_session

    with vllm_session([(model_spec, adapter)]):  # vLLM: one engine for every seed
        for s in seeds:
            per_seed[s] = evaluate_model(model_spec, list(benchmarks), out / f"seed-{s}" if sampled else out,
                                         settings.replace(**dec, seed=s), adapter=adapter, progress=progress,
                                         generate_fn=generate_fn, question_sets=question_sets)
    if not sampled:
        summary = {**per_seed[seeds[0]], "protocol": record}
    else:
        first = per_seed[seeds[0]]
        summary = {k: first[k] for k in ("model", "adapter", "template", "benchmarks", "data_hashes") if k in first}
        summary.update(settings={**first["settings"], "seed": seeds}, protocol=record,
                       seeds=seeds, n_questions=first["n_questions"],
                       scores=_seed_scores([read_predictions(out / f"seed-{s}" / "predictions.jsonl")
                                            for s in seeds], per_seed, seeds, scorers, seed))
    write_summary(out, summary)
    return summary


def evaluate_params_protocols(params: Any, run: Any, jobs: Sequence[tuple[str, str, str | None]], *,
                              progress: bool = True, generate_fn=None) -> dict[str, dict]:
    """Every protocol of `params.eval_protocol` other than `medr1`, for each (label, model, adapter) job,
    into `eval/<label>@<protocol>/`. Returns {"<label>@<protocol>": summary}."""
    from medr1.evaluate import EvalSettings

    settings = EvalSettings.from_params(params)
    out = {}
    for name in params.eval_protocol:
        if name == "medr1":
            continue
        for label, spec, adapter in jobs:
            out[f"{label}@{name}"] = evaluate_protocol(
                spec, name, params.eval_benchmarks, run.eval_dir / f"{label}@{name}", settings,
                eval_seeds=params.eval_seeds, eval_file=params.eval_data_file, adapter=adapter, progress=progress,
                generate_fn=generate_fn)
    return out


def protocol_cli(params: Any, args: Any, model: str, out: Path) -> int:
    """`medr1 eval --protocol NAME [--dry-run]`: print, per benchmark, whether the set is the published one.

    Args:
        params: the resolved `medr1.config.Params` (eval_benchmarks, eval_limit, seed, eval_seeds, ...).
        args: the CLI namespace (protocol, dry_run, no_hub, adapter).
        model, out: the model spec and the output directory.
    """
    from medr1.evaluate import EvalSettings

    benchmarks = list(params.eval_benchmarks)
    load_kw = {"eval_file": params.eval_data_file, "hub": False if args.no_hub else None}
    if args.dry_run:
        record = dry_run(args.protocol, benchmarks, out, params=params, limit=params.eval_limit, seed=params.seed,
                         eval_seeds=params.eval_seeds, split=params.eval_split, data_dir=params.data_dir, **load_kw)
    else:
        summary = evaluate_protocol(model, args.protocol, benchmarks, out, EvalSettings.from_params(params),
                                    eval_seeds=params.eval_seeds, adapter=args.adapter, **load_kw)
        record = summary["protocol"]
        for scorer, per_bench in summary["scores"].items():
            for bench, s in per_bench.items():
                acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
                ci = "" if s.get("ci_low") is None else f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
                spread = "" if s.get("seed_std") is None else f"  seeds sd {100 * s['seed_std']:.1f}"
                print(f"{bench:>16} {scorer:>7}: {acc}{ci}{spread}  n={s['n']}  dropped={s.get('n_dropped', 0)}")
    print(f"protocol {record['protocol']} v{record['version']}: template {record['template']}, temperature "
          f"{record['temperature']}, top_p {record['top_p']}, max_new_tokens {record['max_new_tokens']}, scorer "
          f"{record['scorer']}, seeds {record['eval_seeds']}")
    for bench, b in record["benchmarks"].items():
        published = "no published set" if b["published_set_size"] is None else f"published {b['published_set_size']:,}"
        verdict = COMPARABLE if b["comparable"] else f"not comparable: {b['why_not_comparable']}"
        print(f"{bench:>16}: {b['set_size']:,} questions from {b['source']} ({published}; set matches published: "
              f"{'yes' if b['set_matches_published'] else 'no'}; fingerprint {b['fingerprint']}) -> {verdict}")
    print(f"prompts.jsonl and protocol.json in {out}" if args.dry_run else f"predictions and summary in {out}")
    return 0


def _seed_scores(rows_per_seed, per_seed, seeds, scorers, seed) -> dict:
    """Mean over seeds, spread, and a bootstrap interval over questions of per-question mean correctness."""
    import numpy as np

    from medr1.scoring import score

    out: dict[str, dict] = {}
    for scorer in scorers:
        verdicts = [score(rows, scorer).rows for rows in rows_per_seed]
        out[scorer] = {}
        for bench in per_seed[seeds[0]]["scores"][scorer]:
            accs = [per_seed[s]["scores"][scorer][bench]["accuracy"] for s in seeds]
            accs = [a for a in accs if a is not None]
            by_q: dict[str, list[bool]] = {}
            for vs in verdicts:
                for v in vs:
                    if v.benchmark == bench and v.counted:
                        by_q.setdefault(v.id, []).append(bool(v.correct))
            means = np.array([sum(c) / len(c) for c in by_q.values()])
            low = high = math.nan
            if len(means):
                rng = np.random.default_rng(seed)
                boots = np.concatenate([means[rng.integers(0, len(means), (500, len(means)))].mean(axis=1)
                                        for _ in range(20)])
                low, high = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
            entries = [per_seed[s]["scores"][scorer][bench] for s in seeds]
            out[scorer][bench] = {
                "scorer": scorer, "benchmark": bench, "n": entries[0]["n"],
                "accuracy": float(np.mean(accs)) if accs else None, "ci_low": None if math.isnan(low) else low,
                "ci_high": None if math.isnan(high) else high,
                "ci_method": "bootstrap over questions of per-question mean correctness 95%",
                "seed_accuracies": accs, "seed_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "seed_min": min(accs) if accs else None, "seed_max": max(accs) if accs else None,
                "unparsed": sum(e["unparsed"] for e in entries) / len(entries),
                "n_dropped": sum(e.get("n_dropped", 0) for e in entries) / len(entries),
            }
    return out


__all__ = ["evaluate_params_protocols", "evaluate_protocol", "protocol_cli"]
