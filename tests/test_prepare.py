"""medr1.prepare: the run's training pool and its validation split (carved from training data, for tuning)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FIXTURES, small_params

from medr1.config import Params
from medr1.data import load_benchmark
from medr1.prepare import prepare_data, training_pool


def _params(tmp_path, **changes) -> Params:
    return small_params(tmp_path, training=False, run_name="p", seed=3, **changes)


def test_validation_split_is_disjoint_from_training_and_readable_as_a_benchmark(tmp_path):
    params = _params(tmp_path, validation_size=4)
    train, validation, _ = training_pool(params)
    full, _, _ = training_pool(params.replace(validation_size=0))
    assert len(validation) == 4 and len(train) == len(full) - 4
    assert not {q.id for q in train} & {q.id for q in validation}
    assert {q.id for q in train} | {q.id for q in validation} == {q.id for q in full}
    prepared = prepare_data(params)
    assert prepared.hashes["validation"] and len(prepared.pool) == len(train)
    written = load_benchmark("validation", "validation", params.run_dir / "data")
    assert [(q.id, q.options, q.answer) for q in written] == [(q.id, q.options, q.answer) for q in validation]
    card = (params.run_dir / "data" / "data_card.md").read_text()
    assert "before and after option shuffling" in card and "keep their option order" in card


def test_train_limit_applies_after_the_validation_split(tmp_path):
    train, validation, _ = training_pool(_params(tmp_path, validation_size=3, train_limit=5))
    assert len(validation) == 3 and len(train) == 5


def test_validation_cannot_take_the_whole_pool(tmp_path):
    with pytest.raises(ValueError, match="leaves no training question"):
        training_pool(_params(tmp_path, validation_size=10_000))


def test_validation_split_of_visual_questions_keeps_images_and_modality(tmp_path):
    toyvqa = FIXTURES / "toyvqa"
    params = Params(run_name="v", runs_dir=str(tmp_path / "runs"), data_dir=str(toyvqa), train_sources=["vqa_train"],
                    decontaminate_against=["vqa_test"], eval_benchmarks=["vqa_test"], validation_size=3, seed=1)
    prepare_data(params)
    _, validation, _ = training_pool(params)
    written = load_benchmark("validation", "validation", params.run_dir / "data")
    assert [q.id for q in written] == [q.id for q in validation]
    for original, copy in zip(validation, written, strict=True):
        assert len(copy.images) == len(original.images) >= 1
        assert [Path(p).read_bytes() for p in copy.images] == [Path(p).read_bytes() for p in original.images]
        assert copy.meta.get("modality") == original.meta.get("modality")


# --- hand-over: later stages read what preparation wrote, checked by hash ----------------------------


def test_training_reads_the_prepared_pool_and_evaluation_the_prepared_sets(tmp_path):
    from medr1.data import questions_hash
    from medr1.prepare import load_prepared, prepared_eval_sets

    params = _params(tmp_path, validation_size=2)
    assert prepared_eval_sets(params) is None  # nothing prepared yet: evaluation loads the benchmarks itself
    pool, report = load_prepared(params)  # prepares first when run alone
    train, _, expected = training_pool(params)
    assert questions_hash(pool) == questions_hash(train) and report["n_kept"] == expected.n_kept
    evals = prepared_eval_sets(params)
    assert questions_hash(evals["toyeval"]) == questions_hash(load_benchmark("toyeval", "test", FIXTURES / "train",
                                                                            sample_seed=params.seed))


@pytest.mark.parametrize("change, outcome", [
    ("other_params", "reprepared"),  # prepared from other params: prepared again, deterministic
    ("edited_pool", "error"),        # a file changed after preparation: stop, naming the file
])
def test_a_stale_or_edited_hand_over_is_never_read_silently(tmp_path, change, outcome):
    from medr1.prepare import PreparedDataError, load_prepared

    params = _params(tmp_path)
    prepare_data(params)
    if change == "other_params":
        params = params.replace(validation_size=3)
        pool, _ = load_prepared(params)
        assert len(pool) == len(training_pool(params)[0])
    else:
        path = params.run_dir / "data" / "train_pool.jsonl"
        path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
        with pytest.raises(PreparedDataError, match="train_pool.jsonl"):
            load_prepared(params)


# --- the demo's test questions: drawn fresh, never used while tuning (issue 25, item 6) -----------------

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def test_eval_subset_seed_draws_other_questions_without_changing_training(tmp_path):
    from medr1.config import load_params
    from medr1.data.benchmarks import sample_questions
    from medr1.paths import REPO_ROOT
    from medr1.training_settings import training_settings

    data = REPO_ROOT / "tests" / "fixtures" / "toyqa"
    base = Params(data_dir=str(data), train_sources=["mini_train"], decontaminate_against=["mini_test"],
                  eval_benchmarks=["mini_test"], eval_limit=2, seed=3)
    fresh = base.replace(eval_subset_seed=11)
    assert (base.eval_sample_seed, fresh.eval_sample_seed) == (3, 11)
    assert training_settings(base) == training_settings(fresh)  # the trained model is the same
    questions = list(load_benchmark("mini_test", "test", data))
    for params in (base, fresh):
        prepared = prepare_data(params.replace(runs_dir=str(tmp_path / str(params.eval_sample_seed))))
        assert [q.id for q in prepared.evals["mini_test"]] == [
            q.id for q in sample_questions(questions, 2, params.eval_sample_seed)]
    demo = load_params(REPO_ROOT / "params" / "demo.yaml")
    assert (demo.seed, demo.eval_subset_seed, demo.eval_limit) == (42, 121, 40)


@pytest.mark.skipif(not (SHARED / "medqa" / "test.jsonl").is_file(), reason="no shared benchmarks")
def test_demo_test_subset_was_never_used_while_tuning():
    """Every demo from 6ad109f to issue 25 reported on seed 42's subsets (eval_limit 40, nested: any smaller
    limit is inside), and the first demo (ea78115) on the first 60 MedQA questions in file order."""
    from medr1.config import load_params
    from medr1.data.benchmarks import sample_questions
    from medr1.paths import REPO_ROOT

    demo = load_params(REPO_ROOT / "params" / "demo.yaml")
    for bench in demo.eval_benchmarks:
        questions = list(load_benchmark(bench, "test", SHARED))
        used = {q.id for q in sample_questions(questions, 60, 42)}
        if bench == "medqa":
            used |= {q.id for q in questions[:60]}
        final = {q.id for q in sample_questions(questions, demo.eval_limit, demo.eval_sample_seed)}
        assert len(final) == demo.eval_limit and not final & used, bench
