"""Letter bias, end to end: the measures, the collapse monitor, the letter_balance reward, and evaluation
with option rotations on fake models whose behaviour is known (always "A"; always the gold text)."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest
from helpers import run_eval

from medr1.artifacts import read_predictions
from medr1.generation.hf import Generation
from medr1.report.results import paired_comparison, write_results
from medr1.task.letter_bias import (
    CollapseMonitor,
    answer_entropy,
    answer_top_share,
    collapse_spans,
    letter_recall_std,
)
from medr1.task.rewards import letter_balance

LETTERS = "ABCDE"


# --- measures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("letters, top, entropy", [
    (["A", "B", "C", "D"], 0.25, 2.0),      # balanced: 1/k, log2 k bits
    (["A"] * 8, 1.0, 0.0),                  # collapsed
    (["A", "A", None, None], 0.5, 0.0),     # unparsed rows count in the denominator, never as the top letter
    ([None, None], 0.0, None),              # nothing parsed
])
def test_top_share_and_entropy(letters, top, entropy):
    assert answer_top_share(letters) == top
    assert answer_entropy(letters) == entropy


def test_recall_std_is_zero_without_a_letter_preference():
    golds = list("ABCD") * 3
    assert letter_recall_std(golds, golds) == 0.0                      # always right
    assert letter_recall_std(golds, ["B", "C", "D", "A"] * 3) == 0.0   # always wrong, but evenly
    assert letter_recall_std(golds, ["A"] * 12) == pytest.approx(0.4330127)


# --- collapse monitor ------------------------------------------------------------------------------


def test_collapse_spans_and_monitor_agree():
    shares = [0.3, 0.85, 0.9, 0.95, 0.9, 0.99, 0.2, 0.9, 0.9]
    assert collapse_spans(shares) == [(1, 5)]
    monitor = CollapseMonitor()
    fired = [step for step, s in enumerate(shares, 1) if monitor.update(step, s)]
    assert fired == [6]  # the fifth logged step above 0.8; once per episode


def _fake_trainer(completions, golds):
    """A stand-in for GRPOTrainer with TRL's `_logs` of one generation batch."""
    options = {"A": "a", "B": "b", "C": "c", "D": "d"}
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(len(completions))]
    draws = {json.dumps(p, sort_keys=True, ensure_ascii=False): {"id": f"q{i}", "answer": g, "options": options}
             for i, (p, g) in enumerate(zip(prompts, golds, strict=True))}
    logs = {"prompt": prompts, "completion": completions, "rewards": {"accuracy": [0.0] * len(completions)},
            "advantages": [0.0] * len(completions)}
    return SimpleNamespace(_logs=logs), draws


@pytest.mark.parametrize("answers, warns", [
    (["A"] * 8, True),                                   # collapsed: one letter for every completion
    (["A", "B", "C", "D", "A", "B", "C", "D"], False),   # healthy: balanced answers
])
def test_collapse_warning_fires_only_on_a_collapsed_run(tmp_path, caplog, answers, warns):
    from medr1.runs import RunDir
    from medr1.train.callbacks import metrics_columns, training_callbacks

    run = RunDir(tmp_path / "run")
    run.train_dir.mkdir(parents=True)
    run.metrics_csv.write_text(",".join(metrics_columns(["accuracy"])) + "\n")
    trainer, draws = _fake_trainer([f"Answer: {a}" for a in answers], list("ABCD") * 2)
    callbacks, needs_trainer = training_callbacks(run, ["accuracy"], draws, sample_every=100, progress=False)
    for cb in needs_trainer:
        cb.trainer = trainer
    metrics_cb = callbacks[0]
    with caplog.at_level(logging.WARNING, logger="medr1.train.callbacks"):
        for step in range(1, 7):
            state = SimpleNamespace(is_world_process_zero=True, global_step=step)
            metrics_cb.on_log(None, state, None, logs={"reward": 0.5})
    assert ("answer collapse" in caplog.text) is warns
    rows = run.metrics_csv.read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert float(last["answer_top_share"]) == (1.0 if warns else 0.25)
    assert float(last["answer_entropy"]) == (0.0 if warns else 2.0)


# --- the letter_balance reward ---------------------------------------------------------------------


@pytest.mark.parametrize("answers, golds, expected", [
    # content answerer: every answer is its gold, nothing over-represented
    (["A", "B", "C", "D"], list("ABCD"), [0.0, 0.0, 0.0, 0.0]),
    # "A" to everything with balanced golds: A is 100% of answers but 25% of golds -> worst penalty
    (["A", "A", "A", "A"], list("ABCD"), [-1.0, -1.0, -1.0, -1.0]),
    # a letter answered as often as it is gold costs nothing, even when wrong
    (["B", "A", "D", "C"], list("ABCD"), [0.0, 0.0, 0.0, 0.0]),
    # one group, gold C: the over-represented wrong letter pays, the right one does not
    (["A", "A", "A", "C"], list("CCCC"), [-0.75, -0.75, -0.75, 0.0]),
])
def test_letter_balance_reward(answers, golds, expected):
    assert letter_balance([f"Answer: {a}" for a in answers], answer=golds) == pytest.approx(expected)


@pytest.mark.parametrize("answers", [["A", "A", "A", "B"], ["A", "A", "A", "A"], ["C", "C", "B", "A"]])
def test_letter_balance_cannot_be_gamed_by_not_answering(answers):
    golds = list("ABCD")
    before = letter_balance([f"Answer: {a}" for a in answers], answer=golds)
    for i in range(len(answers)):  # any completion that stops answering is never better off
        hedged = [f"Answer: {a}" for a in answers]
        hedged[i] = "I cannot decide between A and B" if i % 2 else "Answer: A. Answer: B."
        assert letter_balance(hedged, answer=golds)[i] == -1.0 <= before[i]


# --- evaluation with rotations on fake models ------------------------------------------------------


def _write_benchmark(root, name, n, n_options):
    folder = root / name
    folder.mkdir(parents=True)
    with open(folder / "test.jsonl", "w") as f:
        for i in range(n):
            options = {LETTERS[j]: f"choice {j} for item {i}" for j in range(n_options)}
            f.write(json.dumps({"id": f"{name}-{i}", "question": f"Item {i} of {name}?", "options": options,
                                "answer_idx": LETTERS[i % n_options]}) + "\n")
    return {f"Item {i} of {name}?": f"choice {i % n_options} for item {i}" for i in range(n)}


class Answerer:
    """A fake model: `policy(prompt_text, options)` -> letter, answered as "Answer: X"."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, prompts, *, max_new_tokens, batch_size, temperature, top_p, num_samples, seed, on_batch):
        gens = []
        for i, messages in enumerate(prompts):
            text = messages[-1]["content"]
            options = dict(re.findall(r"^([A-E])\. (.*)$", text, re.MULTILINE))
            gens.append(Generation(i, [f"Answer: {self.policy(text, options)}"], 10, [3], ["stop"], 0.01))
        on_batch(gens)
        return gens


@pytest.fixture
def benchmark(tmp_path):
    gold_text = _write_benchmark(tmp_path / "data", "toy4", 12, 4)
    return tmp_path / "data", gold_text


def _evaluate(data_dir, out, policy, k):
    return run_eval("fake/model", ["toy4"], out, template="letter", data_dir=data_dir, progress=False,
                          permutations=k, generate_fn=Answerer(policy), scorers=["strict"])


def test_always_a_scores_one_in_k_and_never_consistently(benchmark, tmp_path):
    data_dir, _ = benchmark
    s = _evaluate(data_dir, tmp_path / "a", lambda text, options: "A", k=4)["scores"]["strict"]["toy4"]
    assert s["n"] == 48 and s["n_questions"] == 12 and s["permutations"] == 4
    assert s["accuracy"] == pytest.approx(1 / 4)
    assert s["consistent_accuracy"] == 0.0
    assert s["answer_top_share"] == 1.0
    assert s["letter_recall_std"] == pytest.approx(0.4330127)


def test_gold_text_answerer_scores_everything_consistently(benchmark, tmp_path):
    data_dir, gold_text = benchmark

    def by_content(text, options):
        wanted = next(g for q, g in gold_text.items() if q in text)
        return next(letter for letter, t in options.items() if t == wanted)

    s = _evaluate(data_dir, tmp_path / "g", by_content, k=4)["scores"]["strict"]["toy4"]
    assert s["accuracy"] == 1.0 and s["consistent_accuracy"] == 1.0
    assert s["letter_recall_std"] == 0.0
    assert s["answer_top_share"] == pytest.approx(0.25)


def test_rows_carry_shift_and_raising_k_resumes(benchmark, tmp_path):
    data_dir, _ = benchmark
    out = tmp_path / "r"
    _evaluate(data_dir, out, lambda text, options: "A", k=1)
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 12 and {r["shift"] for r in rows} == {0}
    calls = []

    def counting(text, options):
        calls.append(text)
        return "A"

    summary = _evaluate(data_dir, out, counting, k=3)
    assert len(calls) == 24  # only the new rotations were generated
    rows = read_predictions(out / "predictions.jsonl")
    assert sorted({(r["id"], r["shift"]) for r in rows}) == sorted({(f"toy4-{i}", s) for i in range(12)
                                                                    for s in range(3)})
    for r in rows:  # the gold letter follows its text under every rotation
        assert r["options"][r["gold"]] == f"choice {int(r['id'].split('-')[1]) % 4} for item {r['id'].split('-')[1]}"
    assert summary["scores"]["strict"]["toy4"]["n"] == 36


def test_paired_comparison_uses_consistent_correctness(benchmark, tmp_path):
    data_dir, gold_text = benchmark
    run = tmp_path / "run"

    def by_content(text, options):
        wanted = next(g for q, g in gold_text.items() if q in text)
        return next(letter for letter, t in options.items() if t == wanted)

    _evaluate(data_dir, run / "eval" / "base", lambda text, options: "A", k=4)
    _evaluate(data_dir, run / "eval" / "trained", by_content, k=4)
    table = paired_comparison(run, "base", "trained", "strict")
    row = table.iloc[0]
    # per question, not per row: always-"A" is right on 1 of 4 rotations of every question, never on all
    assert row["n"] == 12 and row["acc_a"] == 0.0 and row["acc_b"] == 100.0 and row["b01"] == 12
    write_results(run, None)
    md = (run / "results.md").read_text()
    assert "## Letter bias" in md and "consistent_accuracy" in md
