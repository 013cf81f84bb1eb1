"""`medr1` command line: train, eval, pipeline, data, params.

Every subcommand takes the same params files as the notebooks (`-f params/X.yaml`) and `--set key=value`
overrides, so a notebook run and a CLI run of one recipe are the same run. Errors a user can fix
(bad params, bad data, a locked run directory, a missing model) print one clear line and exit 2
instead of a traceback.

The light spine (params, data, runs, the model-spec check, the pipeline) is imported at module level. Each
stage's entry point (`medr1.train`, `medr1.evaluation`) is imported inside its subcommand, after the params
and the model spec are checked: the stages import torch, transformers or pandas (seconds), and
`medr1 params` or a typo in a model path should answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medr1.artifacts import ArtifactError
from medr1.config import ParamsError, load_params, parse_override
from medr1.data import DataError, data_card, load_benchmark
from medr1.models.base import ModelSpecError
from medr1.models.load import check_model_spec
from medr1.pipeline import PipelineError, run_pipeline
from medr1.runs import OutputDirError, RunDir, RunLockedError


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix, printed as one line. A stage's own error is listed only once that stage
    was imported (it cannot have been raised otherwise), so reporting a typo never imports torch."""
    errors = [ParamsError, DataError, ModelSpecError, RunLockedError, OutputDirError, PipelineError, ArtifactError]
    for module, name in (("medr1.evaluation.evaluate", "EvalSettingsError"), ("medr1.train.recipe", "TrainSetupError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--params", dest="params_file", help="YAML params file, e.g. params/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one param (repeatable); the value is YAML, e.g. --set reward_funcs=[accuracy]")


def cmd_train(args) -> int:
    params = load_params(args.params_file, args.overrides)
    check_model_spec(params.model)  # a typo in the model path is reported before torch loads
    from medr1.train import train  # lazy: the stage imports torch and transformers

    result = train(params)
    print(f"training finished: {result}")
    return 0


# `medr1 eval`'s own flags: each is an alias of one params key (`--permutations 3` == `--set eval_permutations=3`).
EVAL_ALIASES = {"benchmarks": "eval_benchmarks", "limit": "eval_limit", "template": "eval_prompt_template",
                "max_new_tokens": "eval_max_new_tokens", "batch_size": "eval_batch_size",
                "temperature": "eval_temperature", "top_p": "eval_top_p", "num_samples": "eval_num_samples",
                "permutations": "eval_permutations", "backend": "eval_backend", "decode": "eval_decode",
                "split": "eval_split", "data_dir": "data_dir", "seed": "seed", "scorers": "eval_scorers",
                "seeds": "eval_seeds", "eval_file": "eval_data_file", "force": "force"}


def eval_params(args):
    """The params of `medr1 eval`: the file, then `--set`, then the alias flags given (each a params key)."""
    overrides = dict(parse_override(o) for o in args.overrides)
    overrides.update({key: getattr(args, flag) for flag, key in EVAL_ALIASES.items() if hasattr(args, flag)})
    return load_params(args.params_file, overrides)


def cmd_eval(args) -> int:
    from medr1.evaluation.protocol_eval import protocol_cli  # lazy: the stage imports pandas
    from medr1.evaluation.run import default_eval_label, evaluate_cli  # lazy: as above

    params = eval_params(args)
    if args.dry_run or args.protocol != "medr1":
        model = args.model or params.model
        out = args.out or RunDir(params.run_dir).eval_dir / (
            f"{default_eval_label(params, model, args.adapter)}@{args.protocol}")
        return protocol_cli(params, args, model, out)
    return evaluate_cli(params, model=args.model, adapter=args.adapter, out=args.out)


def cmd_pipeline(args) -> int:
    notebooks = args.only.split(",") if args.only else None  # None: the params decide (vision adds 06)
    run_pipeline(args.params_file, args.overrides, notebooks=notebooks, force=args.force or None)
    return 0


def cmd_params(args) -> int:
    print(load_params(args.params_file, args.overrides).to_yaml(), end="")
    return 0


def cmd_data(args) -> int:
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
    _add_params_args(p)
    p.add_argument("--model", help="hub id, local path or embedded:smollm2-135m (default: the params' model)")
    p.add_argument("--adapter", help="LoRA adapter directory applied on top of --model")
    p.add_argument("--out", help="output directory (default: runs/<run_name>/eval/<label>, label 'base' for the "
                   "params' own model)")
    for flag, key in EVAL_ALIASES.items():
        if flag != "force":  # no default here: the params hold it, and a flag not given leaves them alone
            p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"= --set {key}=VALUE")
    p.add_argument("--force", action="store_const", const=True, default=argparse.SUPPRESS,
                   help="discard existing predictions (= --set force=true)")
    p.add_argument("--protocol", default="medr1", help="evaluation protocol (medr1.task.protocols): medr1 (the eval_* "
                   "params), huatuo-o1 or huatuo-o1-strict (HuatuoGPT-o1's sets, prompt, decoding and scorer)")
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

