"""Tests for medr1.evaluate: streamed predictions, resume after a kill, settings checks, summaries.

Almost everything runs against a deterministic fake generator (answers are a function of the prompt), so
resume and repair are tested in milliseconds; one slow test evaluates the real embedded model.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from medr1.evaluate import (
    EvalSettingsError,
    evaluate_cli,
    evaluate_model,
    evaluate_params,
    prompt_hash,
    read_predictions,
)
from medr1.generation import Generation
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
        out = []
        for start in range(0, len(prompts), batch_size):
            if self.fail_after is not None and start // batch_size >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            gens = []
            for i in range(start, min(start + batch_size, len(prompts))):
                digest = hashlib.sha256(json.dumps(prompts[i]).encode()).digest()
                texts = [f"<think>hm</think><answer>{LETTERS[(digest[0] + s) % 4]}</answer>"
                         for s in range(num_samples)]
                gens.append(Generation(i, texts, 10, [5] * num_samples, ["stop"] * num_samples, 0.01))
            on_batch(gens)
            out += gens
        return out


def _eval(data_dir, out, gen=None, **kw):
    args = {"max_new_tokens": 32, "batch_size": 3, "data_dir": data_dir, "progress": False,
            "generate_fn": gen or FakeGenerator(), "scorers": ["strict", "huatuo"]}
    args.update(kw)
    return evaluate_model("fake-org/fake-model", ["toya", "toyb"], out, **args)


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
    with pytest.raises(EvalSettingsError, match="line 2"):
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
    assert [r["id"] for r in read_predictions(path)] == expected_ids
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


def test_evaluate_cli_namespace(data_dir, tmp_path, monkeypatch, capsys):
    import argparse

    import medr1.evaluate as ev

    monkeypatch.setattr(ev, "_hf_generate_fn", lambda *a, **k: FakeGenerator())
    args = argparse.Namespace(model="org/m", adapter=None, benchmarks="toya", limit=3, out=str(tmp_path / "o"),
                              template="r1", max_new_tokens=8, batch_size=2, temperature=0.0, top_p=1.0,
                              num_samples=1, backend="hf", split="test", data_dir=str(data_dir), seed=0,
                              scorers="strict", force=False)
    assert evaluate_cli(args) == 0
    assert "toya" in capsys.readouterr().out


@pytest.mark.slow
def test_end_to_end_embedded_model(tmp_path):
    data = tmp_path / "data"
    _write_benchmark(data, "toya", 4)
    out = tmp_path / "eval"
    summary = evaluate_model("embedded:smollm2-135m", ["toya"], out, template="letter", max_new_tokens=12,
                             batch_size=4, data_dir=data, backend="hf", device="cpu", progress=False)
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 4
    assert all(r["completion_tokens"] <= 12 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["prompt_tokens"] > 20 and isinstance(r["completion"], str) for r in rows)
    strict = summary["scores"]["strict"]["toya"]
    assert strict["n"] == 4 and sum(strict["by_rule"].values()) == 4
    assert summary["settings"]["backend"] == "hf"
    assert os.path.getsize(out / "summary.json") > 0
