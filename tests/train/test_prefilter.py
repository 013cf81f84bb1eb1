"""medr1.train.prefilter: informative questions (pass rate strictly between 0 and 1), resumable, counts in the card.

A fake generator stands in for the starting policy: it answers each question right in a fixed number of its
k samples, so which questions the filter must keep is known in advance.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import generate_in_batches

from medr1.config import Params
from medr1.data import Question
from medr1.prepare import load_prepared, prepare_data
from medr1.task.prompts import build_messages
from medr1.train.prefilter import CARD_HEADING, PREFILTER_ROWS, informative_pool, prefilter_pool

K = 4


def _pool(n=9):
    return [Question(f"q{i}", f"question number {i}?", {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}"}, "ABC"[i % 3], "toy")
            for i in range(n)]


def _params(tmp_path, **changes):
    return Params(**{"run_name": "pf", "runs_dir": str(tmp_path / "runs"), "prefilter_samples": K, "seed": 1,
                     **changes})


class FakePolicy:
    """Right in `n_right(i)` of the k samples of question i; records what it was asked, can die mid-way."""

    def __init__(self, pool, n_right, fail_after_batches=None):
        self.by_prompt = {json.dumps(build_messages(q, "r1")): (i, q) for i, q in enumerate(pool)}
        self.n_right, self.fail_after = n_right, fail_after_batches
        self.asked, self.calls = [], []

    def __call__(self, prompts, *, max_new_tokens, batch_size, temperature, top_p, num_samples, seed, on_batch):
        self.calls.append({"temperature": temperature, "top_p": top_p, "num_samples": num_samples, "seed": seed,
                           "max_new_tokens": max_new_tokens})

        def texts_for(_, prompt):
            i, q = self.by_prompt[json.dumps(prompt)]
            self.asked.append(q.id)
            wrong = next(x for x in q.options if x != q.answer)
            return [f"<think>t</think><answer>{q.answer if s < self.n_right(i) else wrong}</answer>"
                    for s in range(num_samples)]

        return generate_in_batches(prompts, batch_size=batch_size, num_samples=num_samples, on_batch=on_batch,
                                   texts_for=texts_for, fail_after=self.fail_after)


def n_right(i):  # 0, 4, 1, 0, 4, 2, 0, 4, 3 right of 4: keep q2, q5, q8
    return [0, K, (i // 3) + 1][i % 3]


def test_keeps_only_questions_with_a_pass_rate_strictly_between_0_and_1(tmp_path):
    pool = _pool()
    policy = FakePolicy(pool, n_right)
    kept, record = prefilter_pool(_params(tmp_path, temperature=0.7, max_completion_length=64), pool,
                                  tmp_path / "out", generate_fn=policy, batch_size=4)
    assert [q.id for q in kept] == ["q2", "q5", "q8"]
    assert (record["n_questions"], record["n_kept"], record["n_all_right"], record["n_all_wrong"]) == (9, 3, 3, 3)
    assert record["mean_pass_rate"] == pytest.approx(sum(n_right(i) for i in range(9)) / (9 * K))
    # sampled as GRPO will sample: k completions at the training temperature and length
    assert policy.calls == [{"temperature": 0.7, "top_p": 1.0, "num_samples": K, "seed": 1, "max_new_tokens": 64}]
    rows = [json.loads(line) for line in (tmp_path / "out" / PREFILTER_ROWS).read_text().splitlines()]
    assert {r["key"]: r["n_correct"] for r in rows} == {f"toy/q{i}": n_right(i) for i in range(9)}


def test_resumes_after_a_kill_and_starts_over_with_other_settings(tmp_path):
    pool = _pool()
    params = _params(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        prefilter_pool(params, pool, tmp_path, generate_fn=FakePolicy(pool, n_right, fail_after_batches=1),
                       batch_size=4)
    with open(tmp_path / PREFILTER_ROWS, "a") as f:
        f.write('{"key": "toy/q7", "n"')  # the kill also cut a line in half
    again = FakePolicy(pool, n_right)
    kept, record = prefilter_pool(params, pool, tmp_path, generate_fn=again, batch_size=4)
    assert again.asked == [f"q{i}" for i in range(4, 9)] and record["generated_now"] == 5  # only the rest
    assert [q.id for q in kept] == ["q2", "q5", "q8"]
    done = FakePolicy(pool, n_right)
    assert prefilter_pool(params, pool, tmp_path, generate_fn=done)[0] == kept and done.asked == []  # all there
    other = FakePolicy(pool, n_right)
    prefilter_pool(params.replace(temperature=0.5), pool, tmp_path, generate_fn=other)
    assert len(other.asked) == 9  # pass rates at another temperature are other pass rates


def test_refuses_what_it_cannot_filter(tmp_path):
    with pytest.raises(ValueError, match=">= 2"):
        prefilter_pool(_params(tmp_path, prefilter_samples=0), _pool(), tmp_path, generate_fn=lambda *a, **k: [])
    silent = lambda prompts, **kw: []  # noqa: E731  (a generator that returns nothing for anyone)
    with pytest.raises(RuntimeError, match="rerun to resume"):
        prefilter_pool(_params(tmp_path), _pool(2), tmp_path, generate_fn=silent)


def test_training_pool_is_filtered_and_the_data_card_says_so(tmp_path):
    # what `train` does after reading the prepared pool: filter it, the counts appended to the data card (once)
    from pathlib import Path

    fixtures = Path(__file__).parents[1] / "fixtures" / "train"
    params = _params(tmp_path, data_dir=str(fixtures), train_sources=["toymed"], decontaminate_against=["toyeval"],
                     eval_benchmarks=["toyeval"], seed=3)
    prepare_data(params)
    full = load_prepared(params)[0]
    expected = [q.id for i, q in enumerate(full) if 0 < n_right(i) < K]
    assert 0 < len(expected) < len(full)
    for _ in range(2):  # a rerun (resume) replaces the card's section, it does not add a second one
        kept = informative_pool(params, full, generate_fn=FakePolicy(full, n_right))
    assert [q.id for q in kept] == expected
    card = (params.run_dir / "data" / "data_card.md").read_text()
    assert card.count(CARD_HEADING) == 1 and "before and after option shuffling" in card  # preparation's part kept
    assert re.search(rf"^n_kept +{len(expected)}$", card, re.M) and re.search(rf"^n_questions +{len(full)}$", card, re.M)
    assert load_prepared(params)[0] == full  # the prepared pool itself is untouched (its hash still holds)
    assert informative_pool(params.replace(prefilter_samples=0), full) == full  # off: nothing sampled
    with pytest.raises(ValueError, match="kept no training question"):
        informative_pool(params.replace(temperature=0.9), full, generate_fn=FakePolicy(full, lambda i: 0))
