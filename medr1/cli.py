"""`medr1` command line: train, eval, pipeline, data, params.

Every subcommand takes the same params files as the notebooks (`-f params/X.yaml`) and `--set key=value`
overrides, so a notebook run and a CLI run of one recipe are the same run. Errors a user can fix
(bad params, bad data, a locked run directory, a missing model) print one clear line and exit 2
instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _user_errors() -> tuple[type[BaseException], ...]:
    from medr1.config import ParamsError
    from medr1.data import DataError
    from medr1.evaluate import EvalSettingsError
    from medr1.models import ModelSpecError
    from medr1.pipeline import PipelineError
    from medr1.runs import OutputDirError, RunLockedError
    from medr1.train import TrainSetupError

    return (ParamsError, DataError, ModelSpecError, RunLockedError, OutputDirError, PipelineError,
            EvalSettingsError, TrainSetupError)


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--params", dest="params_file", help="YAML params file, e.g. params/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one param (repeatable); the value is YAML, e.g. --set reward_funcs=[accuracy]")


def cmd_train(args) -> int:
    from medr1.config import load_params
    from medr1.train import train

    params = load_params(args.params_file, args.overrides)
    result = train(params)
    print(f"training finished: {result}")
    return 0


def cmd_eval(args) -> int:
    from medr1.config import ParamsError
    from medr1.evaluate import evaluate_cli
    from medr1.protocol_eval import protocol_cli

    if args.dry_run or args.protocol != "medr1":
        return protocol_cli(args)
    if not args.model:
        raise ParamsError("--model is required (unless --dry-run)")
    return evaluate_cli(args)


def cmd_pipeline(args) -> int:
    from medr1.pipeline import run_pipeline

    notebooks = args.only.split(",") if args.only else None  # None: the params decide (vision adds 06)
    run_pipeline(args.params_file, args.overrides, notebooks=notebooks, force=args.force or None)
    return 0


def cmd_params(args) -> int:
    from medr1.config import load_params

    print(load_params(args.params_file, args.overrides).to_yaml(), end="")
    return 0


def cmd_data(args) -> int:
    from medr1.data import data_card, load_benchmark

    for name in args.benchmarks.split(","):
        questions = load_benchmark(name, split=args.split, data_dir=args.data_dir)
        print(f"{name}/{args.split}: {len(questions)} questions")
        if args.card:
            for title, frame in data_card(questions).items():
                print(f"\n## {title}\n{frame.to_string()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medr1", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="LoRA GRPO training into runs/<run_name>/train")
    _add_params_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model (and adapter) on benchmarks")
    p.add_argument("--model", help="hub id, local path, adapter dir or embedded:smollm2-135m (not with --dry-run)")
    p.add_argument("--adapter", help="LoRA adapter directory applied on top of --model")
    p.add_argument("--benchmarks", default="medqa", help="comma-separated benchmark names")
    p.add_argument("--limit", type=int, help="N questions of each benchmark (a subset seeded by --seed; a prefix would be biased)")
    p.add_argument("--out", required=True, help="output directory (predictions.jsonl, summary.json)")
    p.add_argument("--template", default="r1", help="prompt template name")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--permutations", type=int, default=1, metavar="K",
                   help="ask each question K times with its options rotated (consistent accuracy, letter bias)")
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scorers", default="strict,huatuo")
    p.add_argument("--force", action="store_true", help="discard existing predictions in --out")
    p.add_argument("--protocol", default="medr1", help="evaluation protocol (medr1.protocols): medr1 (the flags "
                   "above), huatuo-o1 or huatuo-o1-strict (HuatuoGPT-o1's sets, prompt, decoding and scorer)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of a sampled protocol (mean and spread reported)")
    p.add_argument("--eval-file", help="your copy of HuatuoGPT-o1's eval_data.json (their sets, exactly)")
    p.add_argument("--no-hub", action="store_true", help="never try the Hugging Face hub for a set")
    p.add_argument("--dry-run", action="store_true", help="write prompts.jsonl and protocol.json; load no model")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("pipeline", help="run the numbered notebooks with papermill into runs/<run_name>/notebooks")
    _add_params_args(p)
    p.add_argument("--force", action="store_true", help="rerun every notebook from a clean run directory")
    p.add_argument("--only", help="comma-separated notebook names to run")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("params", help="print the resolved, validated params")
    _add_params_args(p)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("data", help="load benchmarks and print counts (and the data card)")
    p.add_argument("--benchmarks", default="medqa")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir")
    p.add_argument("--card", action="store_true")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"medr1 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medr1 {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

