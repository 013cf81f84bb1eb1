"""Tests for medr1.evaluation.evaluate: streamed predictions, resume after a kill, settings checks, summaries.

Almost everything runs against a deterministic fake generator (answers are a function of the prompt), so
resume and repair are tested in milliseconds; one slow test evaluates the real embedded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest
from helpers import generate_in_batches, run_eval

from medr1.artifacts import ArtifactError, read_predictions
from medr1.evaluation.evaluate import EvalSettingsError, prompt_hash
from medr1.evaluation.run import evaluate_params
from medr1.generation.hf import Generation
from medr1.runs import RunLockedError

LETTERS = "ABCD"


def _write_benchmark(root, name, n, n_options=4):
    folder = root / name
    folder.mkdir(parents=True)
    with open(folder / "test.jsonl", "w") as f:
        for i in range(n):
            options = {LETTERS[j]: f"option {j} of {name} {i}" for j in range(n_options)}
            f.write(json.dumps({"id": f"{name}-{i}", "question": f"Question {i} of {name}?",
                                "options": options, "answer_idx": LETTERS[i % n_options]}) + "\n")


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    _write_benchmark(root, "toya", 7)
    _write_benchmark(root, "toyb", 5)
    return root


class FakeGenerator:
    """Answers `<answer>X</answer>` with X a function of the prompt text, in batches like the real one.

    `fail_after` raises after that many batches, standing in for a kill between two batches.
    """

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.calls = []

    def __call__(self, prompts, *, max_new_tokens, batch_size, temperature, top_p, num_samples, seed, on_batch):
        self.calls.append(len(prompts))

        def texts_for(i, prompt):
            digest = hashlib.sha256(json.dumps(prompt).encode()).digest()
            return [f"<think>hm</think><answer>{LETTERS[(digest[0] + s) % 4]}</answer>" for s in range(num_samples)]

        return generate_in_batches(prompts, batch_size=batch_size, num_samples=num_samples, on_batch=on_batch,
                                   texts_for=texts_for, fail_after=self.fail_after, latency_s=0.01)


def _eval(data_dir, out, gen=None, **kw):
    args = {"max_new_tokens": 32, "batch_size": 3, "data_dir": data_dir, "progress": False,
            "generate_fn": gen or FakeGenerator(), "scorers": ["strict", "huatuo"]}
    args.update(kw)
    return run_eval("fake-org/fake-model", ["toya", "toyb"], out, **args)


def test_predictions_and_summary(data_dir, tmp_path):
    out = tmp_path / "eval"
    summary = _eval(data_dir, out)
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 12
    row = rows[0]
    for key in ("id", "benchmark", "prompt_hash", "completion", "extracted", "rule", "gold", "correct",
                "options", "prompt_tokens", "completion_tokens", "latency_s", "finish_reason", "template"):
        assert key in row, key
    assert row["rule"] == "answer_tag"
    assert row["correct"] == (row["extracted"] == row["gold"])
    strict = summary["scores"]["strict"]
    assert strict["toya"]["n"] == 7 and strict["toyb"]["n"] == 5
    expected = sum(r["correct"] for r in rows if r["benchmark"] == "toya") / 7
    assert strict["toya"]["accuracy"] == pytest.approx(expected)
    assert strict["toya"]["ci_low"] <= expected <= strict["toya"]["ci_high"]
    assert strict["toya"]["by_rule"] == {"answer_tag": 7}
    assert set(summary["scores"]) == {"strict", "huatuo"}
    assert set(summary["data_hashes"]) == {"toya", "toyb"}
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_resume_after_kill_with_truncated_last_line(data_dir, tmp_path):
    out = tmp_path / "eval"
    # Killed after two batches of three...
    with pytest.raises(KeyboardInterrupt):
        _eval(data_dir, out, FakeGenerator(fail_after=2))
    path = out / "predictions.jsonl"
    assert len(path.read_text().splitlines()) == 6
    # ...in the middle of writing the seventh row.
    with open(path, "a") as f:
        f.write('{"id": "toyb-0", "benchmark": "toyb", "compl')
    gen = FakeGenerator()
    summary = _eval(data_dir, out, gen)
    assert gen.calls == [6]  # only the questions not yet predicted
    lines = path.read_text().splitlines()
    keys = [(json.loads(x)["benchmark"], json.loads(x)["id"]) for x in lines]
    assert len(keys) == len(set(keys)) == 12  # exactly one prediction per question
    assert summary["scores"]["strict"]["toya"]["n"] == 7
    # The resumed file scores exactly like an uninterrupted run.
    fresh = _eval(data_dir, tmp_path / "fresh")
    assert fresh["scores"] == summary["scores"]


def test_fully_resumed_run_generates_nothing(data_dir, tmp_path):
    out = tmp_path / "eval"
    _eval(data_dir, out)
    gen = FakeGenerator()
    _eval(data_dir, out, gen)
    assert gen.calls == []


@pytest.mark.parametrize("change", [
    {"template": "letter"},       # another prompt
    {"max_new_tokens": 64},       # another length cap
    {"temperature": 0.7},         # sampling instead of greedy
])
def test_resume_with_other_settings_refuses_unless_force(data_dir, tmp_path, change):
    out = tmp_path / "eval"
    _eval(data_dir, out)
    with pytest.raises(EvalSettingsError, match="other settings"):
        _eval(data_dir, out, **change)
    gen = FakeGenerator()
    _eval(data_dir, out, gen, force=True, **change)
    assert gen.calls == [12]
    assert len(read_predictions(out / "predictions.jsonl")) == 12


def test_greedy_resume_ignores_seed_and_batch_size(data_dir, tmp_path):
    out = tmp_path / "eval"
    _eval(data_dir, out, limit=2)
    gen = FakeGenerator()
    _eval(data_dir, out, gen, seed=123, batch_size=5)  # a larger limit adds questions
    assert gen.calls == [12 - 4]


def test_no_resume_refuses_existing_predictions(data_dir, tmp_path):
    out = tmp_path / "eval"
    _eval(data_dir, out)
    with pytest.raises(EvalSettingsError, match="already holds predictions"):
        _eval(data_dir, out, resume=False)


def test_corrupt_middle_line_is_not_silently_dropped(tmp_path):
    path = tmp_path / "predictions.jsonl"
    good = json.dumps({"id": "1", "benchmark": "b"})
    path.write_text(f"{good}\nnot json\n{json.dumps({'id': '2', 'benchmark': 'b'})}\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_predictions(path)


@pytest.mark.parametrize("content, expected_ids", [
    ('{"id": "1", "benchmark": "b"}\n{"id": "2", "ben', ["1"]),                     # cut mid-line
    ('{"id": "1", "benchmark": "b"}\n{"id": "2", "benchmark": "b"}', ["1", "2"]),   # cut before "\n"
    ('{"id": "1", "benchmark": "b"}\n{"id": "1", "benchmark": "b"}\n', ["1"]),      # duplicate row
    ("", []),                                                                        # empty file
])
def test_read_predictions_repairs(tmp_path, content, expected_ids):
    path = tmp_path / "predictions.jsonl"
    path.write_text(content)
    assert [r["id"] for r in read_predictions(path, repair=True)] == expected_ids
    repaired = path.read_text()
    assert repaired == "".join(json.dumps({"id": i, "benchmark": "b"}) + "\n" for i in expected_ids)


def test_lock_refuses_a_second_evaluation(data_dir, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    # A live process other than us (pid 1 always exists) holds the directory.
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "job": "eval"}))
    with pytest.raises(RunLockedError):
        _eval(data_dir, out)


def test_prompt_too_long_rows_count_as_wrong(data_dir, tmp_path):
    def gen(prompts, *, on_batch, num_samples, **_):
        gens = [Generation(i, [""], 9999, [0], ["prompt_too_long"], 0.0) for i in range(len(prompts))]
        on_batch(gens)
        return gens

    summary = _eval(data_dir, tmp_path / "eval", gen)
    strict = summary["scores"]["strict"]["toya"]
    assert (strict["n"], strict["n_correct"], strict["unparsed"]) == (7, 0, 7)
    assert summary["generation"]["toya"]["prompt_too_long"] == 7


def test_several_samples_majority_vote(data_dir, tmp_path):
    summary = _eval(data_dir, tmp_path / "eval", temperature=0.8, num_samples=3)
    rows = read_predictions(tmp_path / "eval" / "predictions.jsonl")
    assert all(len(r["completions"]) == 3 for r in rows)
    strict = summary["scores"]["strict"]["toya"]
    assert strict["majority_vote"] is True and 0 <= strict["sample_accuracy"] <= 1


def test_several_samples_give_pass_at_k_with_intervals(data_dir, tmp_path):
    # summary.json's pass@k is recomputed from the samples in predictions.jsonl: checked here by enumerating
    # every k-subset of each row's samples (the definition the estimator is unbiased for)
    from itertools import combinations

    summary = _eval(data_dir, tmp_path / "eval", temperature=0.8, num_samples=3)
    rows = [r for r in read_predictions(tmp_path / "eval" / "predictions.jsonl") if r["benchmark"] == "toya"]
    strict = summary["scores"]["strict"]["toya"]
    assert sorted(strict["pass_at_k"]) == ["1", "2", "3"]
    for k in (1, 2, 3):
        right = [[f"<answer>{r['gold']}</answer>" in c for c in r["completions"]] for r in rows]
        expected = sum(sum(any(s) for s in combinations(x, k)) / len(list(combinations(x, k))) for x in right) / len(rows)
        assert strict["pass_at_k"][str(k)] == pytest.approx(expected)
        low, high = strict["pass_at_k_ci"][str(k)]
        assert low <= strict["pass_at_k"][str(k)] <= high
    assert strict["pass_at_k"]["1"] == pytest.approx(strict["sample_accuracy"])
    assert "pass_at_k" not in _eval(data_dir, tmp_path / "greedy")["scores"]["strict"]["toya"]  # one sample: none


def test_greedy_with_several_samples_is_refused(data_dir, tmp_path):
    with pytest.raises(ValueError, match="temperature"):
        _eval(data_dir, tmp_path / "eval", num_samples=2)


def test_prompt_hash_depends_on_content():
    a = [{"role": "user", "content": "a"}]
    b = [{"role": "user", "content": "b"}]
    assert prompt_hash(a) == prompt_hash(list(a)) != prompt_hash(b)


def test_evaluate_params_labels(data_dir, tmp_path):
    from medr1.config import load_params

    params = load_params(None, {"eval_benchmarks": ["toya"], "data_dir": str(data_dir), "eval_batch_size": 4,
                                "eval_models": ["base", "trained", "org/other-model"]})
    run = tmp_path / "run"
    # No adapter yet: "trained" fails with a message saying what to do.
    with pytest.raises(FileNotFoundError, match="Train first"):
        evaluate_params(params, run, progress=False, generate_fn=FakeGenerator())
    adapter = run / "train" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    summaries = evaluate_params(params, run, progress=False, generate_fn=FakeGenerator())
    assert set(summaries) == {"base", "trained", "org_other-model"}
    assert summaries["trained"]["adapter"] == str(adapter.resolve())
    for label in summaries:
        assert (run / "eval" / label / "summary.json").is_file()


def _fake_backend(monkeypatch):
    import medr1.generation.backends

    monkeypatch.setattr(medr1.generation.backends, "hf_generate_fn", lambda *a, **k: FakeGenerator())


def test_eval_cli_takes_a_params_file_and_overrides(tmp_path, monkeypatch, capsys):
    from medr1.cli import main
    from medr1.paths import REPO_ROOT

    _fake_backend(monkeypatch)
    out = tmp_path / "o"
    argv = ["eval", "-f", str(REPO_ROOT / "params" / "smoke.yaml"), "--set", "eval_limit=2", "--set",
            f"data_dir={REPO_ROOT / 'tests' / 'fixtures' / 'toyqa'}", "--backend", "hf", "--out", str(out)]
    assert main(argv) == 0
    assert "mini_test" in capsys.readouterr().out
    rows = read_predictions(out / "predictions.jsonl")
    # eval_limit=2 questions, each under smoke.yaml's eval_permutations: 2 rotations
    assert len({r["id"] for r in rows}) == 2 and {r["shift"] for r in rows} == {0, 1}
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["limit"], settings["template"], settings["max_new_tokens"]) == (2, "letter", 16)


@pytest.mark.parametrize("flags, overrides", [
    (["--permutations", "3"], ["eval_permutations=3"]),          # an alias is its params key
    (["--benchmarks", "toya,toyb"], ["eval_benchmarks=[toya, toyb]"]),
    (["--limit", "2", "--force"], ["eval_limit=2", "force=true"]),
    ([], []),                                                     # no flag: the params' values stay
])
def test_eval_cli_flags_are_aliases_of_params_keys(flags, overrides):
    from medr1.cli import build_parser, eval_params

    parser = build_parser()
    alias = eval_params(parser.parse_args(["eval", "-f", "params/smoke.yaml", *flags]))
    given = eval_params(parser.parse_args(["eval", "-f", "params/smoke.yaml", *(
        x for o in overrides for x in ("--set", o))]))
    assert alias == given


def test_eval_cli_default_out_is_the_runs_eval_dir(data_dir, tmp_path, monkeypatch):
    from medr1.cli import main

    _fake_backend(monkeypatch)
    argv = ["eval", "--set", f"runs_dir={tmp_path}", "--set", "run_name=r", "--benchmarks", "toya",
            "--data-dir", str(data_dir), "--limit", "3", "--backend", "hf"]
    assert main(argv) == 0
    assert len(read_predictions(tmp_path / "r" / "eval" / "base" / "predictions.jsonl")) == 3


def test_eval_cli_with_a_runs_params_asks_the_sets_its_preparation_wrote(tmp_path, monkeypatch):
    """A fit-check run's checkpoint is evaluated from the command line on the run's own `fit` set, which no
    benchmark folder holds (without the run's params the set is refused, naming how to evaluate it)."""
    from medr1.cli import main
    from medr1.config import load_params
    from medr1.paths import REPO_ROOT
    from medr1.prepare import prepare_data

    _fake_backend(monkeypatch)
    overrides = dict(runs_dir=str(tmp_path), run_name="fit", data_dir=str(REPO_ROOT / "tests" / "fixtures" / "train"),
                     train_sources=["toymed"], decontaminate_against=["toyeval"], train_limit=5, fit_check=True,
                     eval_benchmarks=["fit"], eval_permutations=2, eval_backend="hf")
    pool = prepare_data(load_params(None, overrides)).pool
    def argv(**changed):
        return ["eval", *(x for k, v in {**overrides, **changed}.items() for x in ("--set", f"{k}={json.dumps(v)}"))]

    assert main(argv()) == 0
    rows = read_predictions(tmp_path / "fit" / "eval" / "base" / "predictions.jsonl")
    assert sorted({r["id"] for r in rows}) == sorted(q.id for q in pool) and {r["shift"] for r in rows} == {0, 1}
    assert main(argv(run_name="unprepared")) == 2


@pytest.mark.slow
def test_eval_cli_smoke_params_with_the_embedded_model(tmp_path, capsys):
    from medr1.cli import main
    from medr1.paths import REPO_ROOT

    out = tmp_path / "o"
    argv = ["eval", "-f", str(REPO_ROOT / "params" / "smoke.yaml"), "--set", "eval_limit=2", "--set",
            f"data_dir={REPO_ROOT / 'tests' / 'fixtures' / 'toyqa'}", "--backend", "hf", "--out", str(out)]
    assert main(argv) == 0
    assert len(read_predictions(out / "predictions.jsonl")) == 4  # 2 questions x 2 rotations


def test_eval_settings_come_from_params():
    from medr1.config import Params
    from medr1.evaluation.evaluate import PARAMS_KEYS, EvalSettings

    params = Params(eval_batch_size=7, eval_limit=3, seed=5)
    settings = EvalSettings.from_params(params)
    assert all(getattr(settings, k) == (tuple(v) if isinstance(v := getattr(params, p), list) else v)
               for k, p in PARAMS_KEYS.items())
    assert settings.replace(batch_size=2).batch_size == 2 and settings.batch_size == 7
    with pytest.raises(TypeError, match="unknown evaluation setting"):
        EvalSettings.from_params(params, batchsize=2)


@pytest.mark.slow
def test_end_to_end_embedded_model(tmp_path):
    data = tmp_path / "data"
    _write_benchmark(data, "toya", 4)
    out = tmp_path / "eval"
    summary = run_eval("embedded:smollm2-135m", ["toya"], out, template="letter", max_new_tokens=12,
                       batch_size=4, data_dir=data, backend="hf", device="cpu", progress=False)
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 4
    assert all(r["completion_tokens"] <= 12 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["prompt_tokens"] > 20 and isinstance(r["completion"], str) for r in rows)
    strict = summary["scores"]["strict"]["toya"]
    assert strict["n"] == 4 and sum(strict["by_rule"].values()) == 4
    assert summary["settings"]["backend"] == "hf"
    assert os.path.getsize(out / "summary.json") > 0


def test_sampled_predictions_resume_only_on_the_same_decode_path(data_dir, tmp_path):
    """Greedy texts are the same on every decode loop, sampled ones are not: when sampling, the backend and
    loop (`sampling_path`) join the resume key, and settings.json records the effective sampling."""
    out = tmp_path / "e"
    _eval(data_dir, out, limit=2, decode="compact")
    _eval(data_dir, out, limit=3, decode="hf")  # greedy: another loop continues the same experiment
    _eval(data_dir, tmp_path / "s", limit=2, temperature=0.5, top_p=0.9, seed=1, decode="compact")
    settings = json.loads((tmp_path / "s" / "settings.json").read_text())
    assert settings["sampling_path"] == "custom/compact"
    assert settings["sampling"] == {"temperature": 0.5, "top_p": 0.9, "top_k": 0, "min_p": 0.0, "typical_p": 1.0,
                                    "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                                    "no_repeat_ngram_size": 0}
    with pytest.raises(EvalSettingsError, match="sampling_path: 'custom/compact' there, 'custom/hf' now"):
        _eval(data_dir, tmp_path / "s", limit=3, temperature=0.5, top_p=0.9, seed=1, decode="hf")
