"""The fit check (issue 26, item 1): a positive control that training learns what its reward pays for.

Fast, no model: training draws never use the option orders the fit check evaluates; the params refuse a fit check
that could not hold its rotations out; preparation writes the training pool as the `fit` set and keeps it out of
decontamination; results.csv carries the paired p-value and every table names the set as training questions.

The same idea on a tiny model: a 2-layer random Llama, first taught to answer one option letter at random
(format, no content), then trained by GRPO through `medr1.train.train` on 4 fixed questions with the accuracy
reward alone. Its expected accuracy reward, computed exactly from the logits of the saved adapter loaded back,
must rise well above the primed model's. A flipped advantage sign pushes it down, a LoRA that does not train
leaves it where it was, and an adapter that does not load reads as the primed model: each fails here (measured
when this test was written; see the report of issue 26).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from medr1.config import ParamsError, load_params
from medr1.data import FIT_BENCHMARK, FIT_LABEL, DataError, Question, benchmark_title, load_benchmark
from medr1.data.option_order import cyclic_shift, training_draws
from medr1.paths import REPO_ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "train"
# The tiny-model test's GRPO settings and threshold. LoRA on the MLP output projections only, rank 4, alpha 64:
# with LoRA on every projection of a random 2-layer model, Adam's per-parameter steps on gradients that are
# mostly sampling noise swamped the signal (expected reward 0.25 -> 0.26 in 10 steps at lr 5e-3; the sampled
# reward fell at lr 2e-2); on down_proj alone the gradient points the same way at every step. Measured with these
# settings (2 prompts x 8 completions a step): expected accuracy reward 0.242 -> 0.368 in 6 steps, 51 CPU-seconds
# for the whole test; with 32 completions a step 0.374, with 8 0.334. Negative controls (issue 26 report): the
# advantage sign flipped -> 0.000, LoRA scaled to zero -> 0.242, the adapter not applied when loading -> 0.242,
# LoRA frozen -> training raises.
LEARNING_RATE, STEPS, BATCH, MIN_GAIN = 3e-2, 6, 16, 0.06


def _rotation(order: list[int]) -> int | None:
    n = len(order)
    return next((s for s in range(n) if order == [(i + s) % n for i in range(n)]), None)


def _questions(n_options: int, count: int) -> list[Question]:
    rng = random.Random(n_options)
    return [Question(f"q{n_options}-{i}", f"question {i}?", {chr(65 + k): f"text {i}.{k}" for k in range(n_options)},
                     chr(65 + rng.randrange(n_options)), "toy") for i in range(count)]


# --------------------------------------------------------------------------------------------------
# Held-out rotations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_options,avoid", [(3, 3), (4, 2), (4, 4), (5, 4), (5, 5)])
def test_training_draws_never_use_an_evaluated_rotation(n_options, avoid):
    pool = _questions(n_options, 12)
    plain = training_draws(pool, 600, seed=1)
    draws = training_draws(pool, 600, seed=1, avoid_rotations=avoid)
    rotations = [_rotation(q.meta["option_order"]) for q in draws]
    assert not [r for r in rotations if r is not None and r < avoid]
    # without the hold-out those orders do come up (the hold-out is doing something)
    assert any((r := _rotation(q.meta["option_order"])) is not None and r < avoid for q in plain)
    # gold letters stay balanced within each pass, and the gold follows its text
    first_pass = [q.answer for q in draws[:12]]
    assert max(first_pass.count(x) for x in set(first_pass)) - min(first_pass.count(chr(65 + k))
                                                                   for k in range(n_options)) <= 1
    by_id = {q.id: q for q in pool}
    assert all(q.options[q.answer] == by_id[q.id].options[by_id[q.id].answer] for q in draws)
    # and every evaluated rotation is an order training never saw
    seen = {(q.id, tuple(q.options.values())) for q in draws}
    assert not [s for q in pool for s in range(min(avoid, n_options))
                if (q.id, tuple(cyclic_shift(q, s).options.values())) in seen]


def test_rotations_cannot_be_held_out_of_two_options_or_a_fixed_order():
    with pytest.raises(ValueError, match="2 options"):
        training_draws(_questions(2, 4), 4, seed=0, avoid_rotations=2)
    fixed = Question("f", "?", {"A": "x", "B": "y", "C": "Both A and B"}, "C", "toy")
    with pytest.raises(ValueError, match="refer to each other"):
        training_draws([fixed, *_questions(3, 3)], 4, seed=0, avoid_rotations=3)
    with pytest.raises(ValueError, match="shuffle_options"):
        training_draws(_questions(4, 4), 4, seed=0, shuffle_options=False, avoid_rotations=2)


# --------------------------------------------------------------------------------------------------
# Params, preparation, labels
# --------------------------------------------------------------------------------------------------


def test_control_fit_params_resolve():
    params = load_params(REPO_ROOT / "params" / "control-fit.yaml")
    assert params.fit_check and params.eval_benchmarks == [FIT_BENCHMARK] and params.eval_permutations >= 2
    assert params.prompt_template == params.eval_prompt_template == "option_text"
    assert params.reference_results is None and params.train_option_counts == []
    assert params.reward_funcs == ["accuracy"]  # a control of what the reward pays for pays for nothing else


@pytest.mark.parametrize("overrides,key", [
    (["fit_check=true"], "fit_check"),                                   # no 'fit' benchmark to evaluate on
    (["eval_benchmarks=[fit]"], "eval_benchmarks"),                      # 'fit' without the fit check
    (["fit_check=true", "eval_benchmarks=[fit]", "eval_permutations=1"], "eval_permutations"),
    (["fit_check=true", "eval_benchmarks=[fit]", "eval_permutations=2", "shuffle_options=false"], "shuffle_options"),
    (["fit_check=true", "eval_benchmarks=[fit]", "eval_permutations=2", "train_option_counts=[4]"],
     "train_option_counts"),
    (["fit_check=true", "eval_benchmarks=[fit]", "eval_permutations=2", "eval_protocol=[medr1, huatuo-o1]"],
     "eval_protocol"),
    (["fit_check=true", "eval_benchmarks=[fit]", "eval_permutations=2", "prefilter_samples=4"], "prefilter_samples"),
])
def test_fit_check_params_refused(overrides, key):
    with pytest.raises(ParamsError, match=f"param '{key}'"):
        load_params(None, overrides)


def test_fit_set_is_the_training_pool_and_not_decontaminated_against(tmp_path):
    from medr1.prepare import prepare_data, prepared_eval_sets
    from medr1.task.protocols import decontamination_sets

    params = load_params(None, dict(runs_dir=str(tmp_path), run_name="fit", data_dir=str(FIXTURES),
                                    train_sources=["toymed"], decontaminate_against=["toyeval"], train_limit=6,
                                    fit_check=True, eval_benchmarks=[FIT_BENCHMARK], eval_permutations=4))
    assert decontamination_sets(params) == ["toyeval:test"]
    prepared = prepare_data(params)
    assert [q.id for q in prepared.evals[FIT_BENCHMARK]] == [q.id for q in prepared.pool] and len(prepared.pool) == 6
    assert prepared.shuffle["avoided_rotations"] == 4
    assert [q.id for q in prepared_eval_sets(params)[FIT_BENCHMARK]] == [q.id for q in prepared.pool]
    with pytest.raises(DataError, match="fit check"):
        load_benchmark(FIT_BENCHMARK, data_dir=FIXTURES)


def test_option_text_template_shows_no_letters_and_reads_the_text():
    from medr1.task.prompts import build_messages
    from medr1.task.rewards import accuracy

    q = Question("1", "Which organ produces insulin?", {"A": "Liver", "B": "Pancreas", "C": "Spleen"}, "B", "toy")
    text = build_messages(q, "option_text")[0]["content"]
    assert "- Liver\n- Pancreas\n- Spleen" in text and "A." not in text and "B." not in text
    options = [json.dumps(q.options)] * 3
    assert accuracy(["Answer: Pancreas", "Answer: Liver", "pancreas, I think"], answer=["B"] * 3,
                    options_json=options) == [1.0, 0.0, 1.0]


def _write_eval(run: Path, label: str, right: list[bool]) -> None:
    from medr1.evaluation.summary import score_predictions

    options = {"A": "liver", "B": "kidney", "C": "spleen"}
    rows = [{"id": str(i), "benchmark": FIT_BENCHMARK, "shift": s, "options": options, "gold": "A",
             "completion": "Answer: liver" if ok else "Answer: kidney"} for i, ok in enumerate(right) for s in range(2)]
    d = run / "eval" / label
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"model": "m", "adapter": "a" if label == "trained" else None,
                                                "settings": {"split": "test"}, "notes": {FIT_BENCHMARK: FIT_LABEL},
                                                "scores": score_predictions(rows, ["strict"])}))


def test_results_carry_the_fit_label_and_the_paired_p_value(tmp_path):
    import pandas as pd

    from medr1.report.results import write_results

    run = tmp_path / "run"
    _write_eval(run, "base", [False] * 8)
    _write_eval(run, "trained", [True] * 7 + [False])
    write_results(run, None)
    table = pd.read_csv(run / "results.csv")
    assert set(table.eval_set) == {FIT_LABEL}
    trained = table[table.label == "trained"].iloc[0]
    assert trained.paired_with == "base" and trained.paired_difference == pytest.approx(87.5)
    assert trained.paired_p_value == pytest.approx(2 * 0.5 ** 7)  # exact McNemar, 7 discordant questions one way
    assert table[table.label == "base"].paired_p_value.isna().all()
    md = (run / "results.md").read_text()
    assert md.count(benchmark_title(FIT_BENCHMARK)) >= 3 and f"**{FIT_LABEL}.**" in md


# --------------------------------------------------------------------------------------------------
# The same idea on a tiny model: GRPO must raise the accuracy reward on a fixed set
# --------------------------------------------------------------------------------------------------


def _letter_answerer(path: Path, prompt_ids: list[list[int]], tok) -> str:
    """A random 2-layer Llama taught, in a few dozen Adam steps on the fixed prompts, to answer one option letter
    (A-D uniformly, whatever the question): the answer format without any content, so that the accuracy reward
    starts at 1/4 with mixed groups and only GRPO can move it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    letters = [tok.convert_tokens_to_ids(x) for x in "ABCD"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = 0.0
        for row in prompt_ids:  # the answer position only: uniform over the letters
            loss = loss - model(torch.tensor([row]), logits_to_keep=1).logits[0, -1].log_softmax(-1)[letters].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _expected_accuracy(spec: str, prompt_ids: list[list[int]], gold: str) -> float:
    """The policy's expected accuracy reward on the fixed prompts, exactly (no sampling): with one-token
    completions, the mean probability of the gold letter. `spec` is a model or adapter directory, loaded as
    evaluation loads it (`medr1.models.load.load_model`), so an adapter that does not load reads as the untrained
    model."""
    import torch

    from medr1.models.load import load_model

    model, tok = load_model(spec, device="cpu")
    with torch.inference_mode():
        probs = [model(torch.tensor([row]), logits_to_keep=1).logits[0, -1].softmax(-1) for row in prompt_ids]
    return sum(p[tok.convert_tokens_to_ids(gold)].item() for p in probs) / len(probs)


def fit_tiny_model(tmp_path: Path, reward_funcs=None) -> tuple[float, float, list[float]]:
    """GRPO through `medr1.train.train` on the toyfit set from a primed letter answerer: (expected accuracy reward
    before, after, sampled accuracy reward per step). `reward_funcs` replaces the accuracy reward (the negative
    controls of the issue 26 report flip its sign)."""
    import torch

    from medr1.artifacts import read_metrics
    from medr1.models.base import load_tokenizer
    from medr1.models.load import resolve_model_path
    from medr1.prepare import training_pool
    from medr1.task.prompts import build_messages
    from medr1.train import train

    # toyfit: 4 questions, every gold "B", options as written (no shuffling): what is learnable in a few steps by
    # a model that knows nothing is the letter its reward pays for on these prompts. One-token completions: the
    # letter is the whole answer ("B" reads as B), so nothing after it can earn or lose reward.
    params = load_params(None, dict(
        run_name="fit", runs_dir=str(tmp_path / "runs"), data_dir=str(FIXTURES), train_sources=["toyfit"],
        decontaminate_against=["toyeval"], eval_benchmarks=["toyeval"], backend="trl", device="cpu", seed=0,
        shuffle_options=False, prompt_template="letter", reward_funcs=["accuracy"], num_generations=8,
        per_device_train_batch_size=BATCH, max_prompt_length=256, max_completion_length=1, lora_r=4, lora_alpha=64,
        lora_target_modules=["down_proj"], learning_rate=LEARNING_RATE, lr_scheduler_type="constant",
        max_steps=STEPS, save_steps=100, sample_every=100))
    questions, _, _ = training_pool(params)
    assert len(questions) == 4 and {q.answer for q in questions} == {"B"}
    tok = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    prompt_ids = [tok(tok.apply_chat_template(build_messages(q, "letter"), add_generation_prompt=True, tokenize=False),
                      add_special_tokens=False)["input_ids"] for q in questions]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from more, and they spin on a busy machine
    try:
        model = _letter_answerer(tmp_path / "letter-answerer", prompt_ids, tok)
        before = _expected_accuracy(model, prompt_ids, "B")
        result = train(params.replace(model=model), progress=False, reward_funcs=reward_funcs)
        after = _expected_accuracy(str(result.adapter_dir), prompt_ids, "B")
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(result.run_dir / "train" / "metrics.csv")
    return before, after, [r["reward"] for r in rows]


@pytest.mark.slow  # it trains (the marker's meaning); `make test`, hence CI, runs it: about 50 CPU-seconds
def test_grpo_raises_the_accuracy_reward_on_a_fixed_set(tmp_path):
    import numpy as np

    before, after, rewards = fit_tiny_model(tmp_path)
    # The sampled reward per step (16 completions) is printed, not asserted: its sampling noise (about 0.1) is the
    # size of the gain; the exact expected reward before and after is the measurement.
    print(f"expected accuracy reward {before:.3f} -> {after:.3f}; sampled per step {np.round(rewards, 2).tolist()}")
    assert 0.2 < before < 0.3  # the premise: a letter answerer at chance
    assert after > before + MIN_GAIN
