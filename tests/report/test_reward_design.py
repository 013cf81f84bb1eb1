"""medr1/report/reward_design.py on a model's own samples (notebook 02), with a tiny random Llama: the path
that generates, extracts and scores, per template."""

from __future__ import annotations

from helpers import small_params

from medr1.data import load_benchmark
from medr1.prepare import data_dir_of
from medr1.report.reward_design import group_summary, sample_rewards


def test_sample_rewards_scores_a_text_models_own_samples(tmp_path, tiny_checkpoint):
    params = small_params(tmp_path, model=tiny_checkpoint, training=False)
    questions = load_benchmark(params.train_sources[0], "train", data_dir_of(params), limit=2)
    samples = sample_rewards(params, questions, num_samples=2, max_new_tokens=4, templates=["r1", "letter"])
    # one row per (template, question, sample), each scored by its template's rewards
    assert len(samples) == 2 * 2 * 2
    assert set(samples.groupby("template")["rewards"].first()) == {"1*accuracy + 1*format",
                                                                 "1*accuracy + 1*answer_parsable"}
    assert samples["total"].notna().all() and samples["group_std"].notna().all()
    assert list(group_summary(samples).index) == ["letter", "r1"]
