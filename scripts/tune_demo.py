"""Tune the CPU demo on its validation split, never on test questions.

    .venv/bin/python scripts/tune_demo.py NAME [key=value ...]

Trains `params/demo.yaml` with the overrides into `runs/tune-NAME/` and evaluates the base model and the
trained adapter on the run's validation split (`validation_size` questions carved from the training pool
by `medr1.prepare.training_pool`, written to `runs/tune-NAME/data/validation/`), each question under every
rotation of its options. Prints one JSON line per model with accuracy, consistent accuracy, the share of
the most frequent answer and the parse rate: the numbers the demo's settings were chosen by.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from medr1.config import load_params
from medr1.evaluate import EvalSettings, evaluate_model
from medr1.prepare import prepare_data
from medr1.runs import RunDir
from medr1.train import train


def main(argv: list[str]) -> int:
    name, overrides = argv[0], argv[1:]
    logging.basicConfig(level=logging.WARNING)
    params = load_params("params/demo.yaml", [f"run_name=tune-{name}", "force=true", *overrides])
    if params.validation_size == 0:
        params = params.replace(validation_size=30)
    t0 = time.perf_counter()
    prepare_data(params)
    train(params, progress=False)
    train_s = time.perf_counter() - t0
    run = RunDir(params.run_dir)
    data_dir = run.path / "data"
    # The base model's answers do not depend on the candidate: evaluated once, resumed after.
    base_dir = RunDir(params.run_dir.parent / f"tune-base-v{params.validation_size}-s{params.seed}").eval_dir / "base"
    for label, adapter, out in (("base", None, base_dir), ("trained", str(run.adapter_dir), run.eval_dir / "trained")):
        settings = EvalSettings.from_params(params, permutations=5, split="validation", data_dir=data_dir,
                                            force=label == "trained")
        summary = evaluate_model(params.model, ["validation"], out, settings, adapter=adapter, progress=False)
        s = summary["scores"]["strict"]["validation"]
        print(json.dumps({"name": name, "model": label, "overrides": overrides, "train_s": round(train_s),
                          "accuracy": round(100 * s["accuracy"], 1),
                          "consistent": round(100 * s["consistent_accuracy"], 1),
                          "top_share": round(100 * s["answer_top_share"], 1),
                          "parse_rate": round(100 * (1 - s["unparsed"] / s["n"]), 1),
                          "recall_std": round(100 * s["letter_recall_std"], 1), "n_questions": s["n_questions"]}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
