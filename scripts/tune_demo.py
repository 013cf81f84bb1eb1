"""Tune the CPU demo on its validation split, never on test questions.

    .venv/bin/python scripts/tune_demo.py NAME [key=value ...]

Trains `params/demo.yaml` with the overrides into `runs/tune-NAME/` and evaluates the base model and the
trained adapter on the run's validation split (`validation_size` questions carved from the training pool
by `medr1.prepare.training_pool`, written to `runs/tune-NAME/data/validation/`), cut to 3, 4 and 5 options
(the test sets' option counts) and asked under every rotation of its options. Prints one JSON line per
model and option count with accuracy, consistent accuracy, the share of the most frequent answer and the
parse rate: the numbers the demo's settings were chosen by.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time

from medr1.config import load_params
from medr1.data import load_benchmark
from medr1.data.option_order import keep_options
from medr1.evaluation.evaluate import EvalSettings, evaluate_model
from medr1.prepare import prepare_data
from medr1.runs import RunDir, atomic_write_text
from medr1.train import train

VALIDATION_OPTION_COUNTS = (3, 4, 5)  # PubMedQA asks with 3 options, MedQA and MedMCQA with 4, AfriMed-QA with 5


def write_option_count_variants(data_dir, seed: int) -> list[str]:
    """The validation split cut to each of `VALIDATION_OPTION_COUNTS` options (gold kept, distractors drawn
    with a seeded RNG), written as local benchmarks `validation-<k>`: the letter habits a model shows on
    five-option prompts do not predict its habits on the four-letter prompts it is tested with (the first
    tuned demo: 59 % top share on five-option validation, "B" for 96 % of MedQA), so each count is checked."""
    questions = load_benchmark("validation", "validation", data_dir)
    names = []
    for k in VALIDATION_OPTION_COUNTS:
        rows = []
        for q in questions:
            c = keep_options(q, k, random.Random(f"{seed}:validation:{k}:{q.id}"))
            rows.append({"id": c.id, "question": c.question, "options": c.options, "answer_idx": c.answer,
                         "source": c.source})
        atomic_write_text(data_dir / f"validation-{k}" / "validation.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        names.append(f"validation-{k}")
    return names


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
    benchmarks = write_option_count_variants(data_dir, params.seed)
    # The base model's answers do not depend on the candidate: evaluated once, resumed after.
    base_dir = RunDir(params.run_dir.parent / f"tune-base-v{params.validation_size}-s{params.seed}").eval_dir / "base"
    for label, adapter, out in (("base", None, base_dir), ("trained", str(run.adapter_dir), run.eval_dir / "trained")):
        settings = EvalSettings.from_params(params, permutations=max(VALIDATION_OPTION_COUNTS), split="validation",
                                            data_dir=data_dir, force=label == "trained")
        summary = evaluate_model(params.model, benchmarks, out, settings, adapter=adapter, progress=False)
        for bench in benchmarks:
            s = summary["scores"]["strict"][bench]
            print(json.dumps({"name": name, "model": label, "set": bench, "overrides": overrides,
                              "train_s": round(train_s), "accuracy": round(100 * s["accuracy"], 1),
                              "consistent": round(100 * s["consistent_accuracy"], 1),
                              "top_share": round(100 * s["answer_top_share"], 1),
                              "parse_rate": round(100 * (1 - s["unparsed"] / s["n"]), 1),
                              "recall_std": round(100 * s["letter_recall_std"], 1),
                              "n_questions": s["n_questions"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
