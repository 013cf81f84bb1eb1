"""Hostile or broken input at the entry points: data files, params, model outputs, and what may be written
where.

tests/data/test_data.py, tests/test_config.py and tests/task/test_rewards.py check each validator on its own; this
file checks what a user meets: `medr1 train | eval | pipeline` given a broken file, a typo'd key or a
model that does not exist must exit 2 with one line naming the file and line (or the key and the allowed
values) before any weights load or notebook runs; a model that writes garbage must never crash a reward
or the extraction; and nothing a params file or a model spec says can make a job read secrets into its
artifacts or write outside its run directory.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_eval
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medr1.cli import main
from medr1.config import Params, load_params
from medr1.data import build_training_pool, load_benchmark
from medr1.paths import PARAMS_DIR, REPO_ROOT
from medr1.task.answers import RULES, extract_choice, extract_choice_with_rule
from medr1.task.rewards import REWARD_FUNCS, REWARD_RANGES

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "toyqa"
SMOKE = str(PARAMS_DIR / "smoke.yaml")
GOOD = {"question": "Which organ produces insulin?", "options": {"A": "Liver", "B": "Pancreas"}, "answer_idx": "B"}


def _write_jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


def _question(i: int, source: str, text: str | None = None) -> dict:
    return {"realidx": str(i), "question": text or f"{source} question number {i} about organ {i}?",
            "options": {"A": f"liver {i}", "B": f"pancreas {i}"}, "answer_idx": "B"}


# --------------------------------------------------------------------------------------------------
# Data files at the entry points
# --------------------------------------------------------------------------------------------------

HOSTILE_RECORDS = [
    # (line 2 of the file, words the error must contain besides the file name and "line 2")
    (b'{"question": "x", "options": {"A": "\xff\xfe"}}', "invalid UTF-8"),  # undecodable bytes
    (json.dumps([GOOD]).encode(), "expected a JSON object"),  # valid JSON, wrong shape
    ({**GOOD, "options": ["Liver", "Pancreas"]}, "got a list"),  # options as a list
    ({**GOOD, "answer_idx": "Pancreas"}, "answer text 'Pancreas'"),  # the answer's text, not its letter
    ({**GOOD, "options": {"A": "Liver"}, "answer_idx": "A"}, "got 1"),  # one option
    ({**GOOD, "options": {chr(65 + i): str(i) for i in range(26)} | {"[": "x"}}, "got 27"),  # 27 options
]


@pytest.mark.parametrize(("bad", "words"), HOSTILE_RECORDS)
def test_train_cli_names_file_and_line_of_a_bad_training_record(bad, words, tmp_path, error_line, tripwires):
    data = tmp_path / "data"
    _write_jsonl(data / "src" / "train.jsonl", [_question(1, "src"), bad, _question(3, "src")])
    _write_jsonl(data / "held" / "test.jsonl", [_question(9, "held")])
    argv = ["train", "-f", SMOKE, "--set", f"runs_dir={tmp_path / 'runs'}", "--set", f"data_dir={data}",
            "--set", "train_sources=[src]", "--set", "decontaminate_against=[held]"]
    assert main(argv) == 2
    line = error_line("train")
    assert "src/train.jsonl, line 2" in line and words in line, line
    assert not (tmp_path / "runs" / "smoke" / "train" / "metrics.csv").exists()


@pytest.mark.parametrize(("bad", "words"), HOSTILE_RECORDS)
def test_eval_cli_names_file_and_line_of_a_bad_question(bad, words, tmp_path, error_line, tripwires):
    data = tmp_path / "data"
    _write_jsonl(data / "bench" / "test.jsonl", [_question(1, "bench"), bad])
    out = tmp_path / "eval"
    argv = ["eval", "--model", "embedded:smollm2-135m", "--benchmarks", "bench", "--data-dir", str(data),
            "--out", str(out), "--backend", "hf"]
    assert main(argv) == 2
    line = error_line("eval")
    assert "bench/test.jsonl, line 2" in line and words in line, line
    assert not (out / "predictions.jsonl").exists()


def test_training_pool_ids_stay_unique_across_sources(tmp_path):
    # Two benchmarks that both number their questions 1, 2, 3 (different questions): ids key the training
    # dataset and samples.jsonl, so a shared id would attribute one question's samples to another.
    _write_jsonl(tmp_path / "a" / "train.jsonl", [_question(i, "a") for i in (1, 2, 3)])
    _write_jsonl(tmp_path / "b" / "train.jsonl", [_question(i, "b") for i in (1, 2, 4)])
    _write_jsonl(tmp_path / "held" / "test.jsonl", [_question(9, "held")])
    pool, _ = build_training_pool(["a", "b"], eval_sets=["held"], data_dir=tmp_path)
    ids = sorted(q.id for q in pool)
    assert ids == ["1", "2", "3", "4", "b:1", "b:2"]  # the later source's clashing ids are namespaced
    by_id = {q.id: q for q in pool}
    assert by_id["b:1"].source == "b" and by_id["1"].source == "a"


def test_training_pool_drops_a_question_repeated_in_two_sources(tmp_path):
    # The same question in two files is one training question, whatever its ids.
    same = _question(1, "a")
    _write_jsonl(tmp_path / "a" / "train.jsonl", [same])
    _write_jsonl(tmp_path / "b" / "train.jsonl", [{**same, "realidx": "other"}, _question(2, "b")])
    _write_jsonl(tmp_path / "held" / "test.jsonl", [_question(9, "held")])
    pool, report = build_training_pool(["a", "b"], eval_sets=["held"], data_dir=tmp_path)
    assert sorted(q.id for q in pool) == ["1", "2"] and report.n_duplicates == 1


def test_eval_keeps_benchmarks_sharing_ids_apart(tmp_path):
    # Predictions are keyed by (benchmark, id): two files with the same ids give one row each, and a
    # resumed run recognises both as done.

    from medr1.generation.hf import Generation

    _write_jsonl(tmp_path / "x" / "test.jsonl", [_question(i, "x") for i in range(3)])
    _write_jsonl(tmp_path / "y" / "test.jsonl", [_question(i, "y") for i in range(3)])
    calls = []

    def gen(prompts, *, on_batch, **_):
        calls.append(len(prompts))
        gens = [Generation(i, ["Answer: B"], 5, [2], ["stop"], 0.0) for i in range(len(prompts))]
        on_batch(gens)
        return gens

    kwargs = dict(template="letter", data_dir=tmp_path, progress=False, generate_fn=gen)
    summary = run_eval("org/fake", ["x", "y"], tmp_path / "out", **kwargs)
    assert summary["n_questions"] == 6
    assert {b: s["n"] for b, s in summary["scores"]["strict"].items()} == {"x": 3, "y": 3}
    run_eval("org/fake", ["x", "y"], tmp_path / "out", **kwargs)
    assert calls == [6]  # the rerun found all six done


# --------------------------------------------------------------------------------------------------
# Params and model specs at the entry points
# --------------------------------------------------------------------------------------------------

BAD_PARAMS = [
    # (--set overrides, words the one-line error must contain)
    (["lora_rr=4"], ["unknown param", "'lora_rr'", "did you mean 'lora_r'"]),  # unknown key
    (["max_steps=ten"], ["'max_steps'", "integer", "'ten'"]),  # wrong type
    (["backend=jax"], ["'backend'", "['auto', 'trl', 'unsloth']"]),  # not an allowed value
    (["num_generations=3"], ["'num_generations'", "divide"]),  # impossible combination
    (["device=cpu", "use_vllm=true"], ["'use_vllm'", "CUDA"]),  # impossible on this hardware
    (["model=./no/such/model"], ["model path './no/such/model' does not exist"]),  # missing local model
    (["model=embedded:nope"], ["unknown embedded model 'nope'", "embedded:smollm2-135m"]),  # unknown embedded
    (["model=not a model"], ["neither an existing path, a hub id"]),  # not even a hub id
]


@pytest.mark.parametrize("command", ["train", "pipeline"])
@pytest.mark.parametrize(("overrides", "words"), BAD_PARAMS)
def test_bad_params_fail_in_one_line_before_any_work(command, overrides, words, tmp_path, error_line, tripwires):
    argv = [command, "-f", SMOKE, "--set", f"runs_dir={tmp_path}"]
    for o in overrides:
        argv += ["--set", o]
    start = time.perf_counter()
    assert main(argv) == 2
    line = error_line(command)
    assert all(w in line for w in words), line
    assert time.perf_counter() - start < 30  # a typo costs seconds (torch may be imported once), not a run
    assert not (tmp_path / "smoke").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "./no/such/model"], "model path './no/such/model' does not exist"),  # missing local model
    (["--model", "embedded:nope"], "unknown embedded model 'nope'"),  # unknown embedded name
    (["--model", "embedded:smollm2-135m", "--adapter", "./no/adapter"], "'./no/adapter' has no adapter_config"),
    (["--model", "embedded:smollm2-135m", "--template", "nope"], "nope"),  # unknown prompt template
])
def test_eval_cli_bad_model_fails_before_any_work(args, words, tmp_path, error_line, tripwires):
    out = tmp_path / "eval"
    assert main(["eval", *args, "--benchmarks", "mini_test", "--data-dir", str(FIXTURES), "--out", str(out)]) == 2
    assert words in error_line("eval")
    assert not out.exists()  # not even the output directory


def test_bad_model_spec_fails_without_importing_torch(tmp_path):
    # Measured in a fresh interpreter: nothing heavy is imported before a model typo is reported.
    code = ("import sys, time; from medr1.cli import main; t = time.perf_counter(); "
            f"rc = main(['train', '-f', {SMOKE!r}, '--set', 'model=./no/such/model', '--set', "
            f"'runs_dir={tmp_path}']); print(rc, 'torch' in sys.modules, round(time.perf_counter() - t, 2))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    rc, torch_imported, seconds = proc.stdout.split()
    assert (rc, torch_imported) == ("2", "False"), proc.stderr
    assert float(seconds) < 5
    assert proc.stderr.strip().splitlines()[-1].startswith("medr1 train: error: model path")


def test_eval_models_specs_are_all_checked_before_the_first_evaluation(tmp_path, tripwires):
    from medr1.evaluation.run import evaluate_params
    from medr1.models.base import ModelSpecError

    params = load_params(SMOKE, {"runs_dir": str(tmp_path), "eval_models": ["base", "./typo/model"]})
    with pytest.raises(ModelSpecError, match="typo/model"):
        evaluate_params(params, progress=False)
    assert not (tmp_path / "smoke" / "eval").exists()  # "base" was not evaluated first


# --------------------------------------------------------------------------------------------------
# Model outputs: rewards and extraction never raise
# --------------------------------------------------------------------------------------------------

OPTIONS = {"A": "Aspirin", "B": "Warfarin", "C": "Heparin", "D": "Clopidogrel"}
ADVERSARIAL = [
    "\x00\x07\x1b[2J\x7f\u202e\ufeff Answer: B \x00",  # control, bidi and BOM characters around an answer
    "".join(map(chr, range(32))) * 1000,  # every C0 control character, 32k of them
    " \t\n\r\x0b\x0c" * 20_000,  # only whitespace, 120k characters
    "",  # empty
    "<think><think><answer><answer>B</answer></think></answer></think>",  # nested and crossed tags
    "<answer>" * 20_000,  # 160k characters of unclosed answer tags
    "</think>" * 5_000 + "<answer>B",  # stray closes, answer never closed
    "<think>" + "x" * 100_000 + "</think><answer>C</answer>",  # a 100k-character thought, then an answer
    "\\boxed{\\boxed{\\boxed{B}}}" * 4_000,  # nested boxes
    "\ud800\udfff<answer>\ud83d</answer>",  # lone surrogates (not valid UTF-8 at all)
    "Answer: " + "A" * 100_000,  # one 100k-character word after the statement
]
ODD_COMPLETIONS = [
    [{"role": "assistant", "content": None}],  # chat message without text
    [{"role": "assistant"}],  # no content key
    [],  # no messages
    [{"role": "assistant", "content": [{"type": "text", "text": "Answer: B"}]}],  # multimodal-style content
    None,  # nothing at all
    12345,  # not text
]


@pytest.mark.parametrize("completion", ADVERSARIAL + ODD_COMPLETIONS,
                         ids=[f"adversarial-{i}" for i in range(len(ADVERSARIAL))]
                         + [f"odd-{i}" for i in range(len(ODD_COMPLETIONS))])
def test_every_reward_and_the_extraction_survive_adversarial_completions(completion):
    start = time.perf_counter()
    result = extract_choice_with_rule(completion, OPTIONS)
    assert result.rule in RULES and (result.letter is None or result.letter in OPTIONS)
    for name, fn in REWARD_FUNCS.items():
        (value,) = fn([completion], answer=["B"], options_json=[json.dumps(OPTIONS)])
        assert REWARD_RANGES[name][0] <= value <= REWARD_RANGES[name][1], name
    # Every rule and reward on a 100k+ character completion, within a training step's budget.
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("options_json", [
    "not json",  # unparsable options column
    json.dumps(["Aspirin", "Warfarin"]),  # options as a list
    json.dumps({"A": None, "B": 3}),  # non-text option values
    json.dumps({chr(65 + i): "x" for i in range(26)} | {"[": "y"}),  # 27 options
    "[" * 10_000,  # nesting deep enough to break a recursive parser
])
def test_rewards_survive_a_broken_options_column(options_json):
    for name, fn in REWARD_FUNCS.items():
        (value,) = fn(["<think>hm</think><answer>B</answer>"], answer=["B"], options_json=[options_json])
        assert REWARD_RANGES[name][0] <= value <= REWARD_RANGES[name][1], name


LETTER_OPTIONS = st.integers(2, 26).flatmap(
    lambda n: st.fixed_dictionaries({c: st.text(max_size=10) for c in string.ascii_uppercase[:n]}))
HOSTILE_TEXT = st.lists(st.one_of(
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "Answer: ", "\\boxed{", "}", "A", "B", "Z",
                     " or ", "\n", "\x00", "\u202e", "\ud800", " " * 50]),
    st.text(max_size=20), st.characters()), max_size=60).map("".join)


# 8,000 examples: 20,000 took 125 s on 2 cores, the longest test of the suite (2026-12-07), for a suite meant
# to stay near 15 minutes (tests/task/test_answers.py and test_rewards.py fuzz the same functions in the fast suite).
@pytest.mark.slow
@settings(max_examples=8_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=HOSTILE_TEXT, options=LETTER_OPTIONS, data=st.data())
def test_eight_thousand_hostile_completions_never_raise(text, options, data):
    gold = data.draw(st.sampled_from(sorted(options)))
    letter = extract_choice(text, options)
    assert letter is None or letter in options
    completion = data.draw(st.sampled_from([text, [{"role": "assistant", "content": text}]]))
    for name, fn in REWARD_FUNCS.items():
        (value,) = fn([completion], answer=[gold], options_json=[json.dumps(options)])
        assert REWARD_RANGES[name][0] <= value <= REWARD_RANGES[name][1], name


# --------------------------------------------------------------------------------------------------
# Prompts longer than the model's context
# --------------------------------------------------------------------------------------------------

HUGE = "A patient presents with " + "fever and cough " * 6_000 + "; which drug?"  # ~18k tokens > 8192


@pytest.mark.slow
def test_huge_questions_are_counted_not_crashed_in_eval_and_training(tmp_path):

    from medr1.models.base import load_tokenizer
    from medr1.models.load import resolve_model_path
    from medr1.train.recipe import build_dataset

    _write_jsonl(tmp_path / "bench" / "test.jsonl", [_question(0, "x"), _question(1, "x", HUGE), _question(2, "x")])
    # Evaluation: the huge prompt shares a batch with normal ones; it becomes a counted, wrong row.
    summary = run_eval("embedded:smollm2-135m", ["bench"], tmp_path / "eval", template="letter",
                             max_new_tokens=4, batch_size=3, data_dir=tmp_path, backend="hf", device="cpu",
                             progress=False)
    assert summary["n_questions"] == 3 and summary["generation"]["bench"]["prompt_too_long"] == 1
    strict = summary["scores"]["strict"]["bench"]
    assert strict["n"] == 3 and strict["unparsed"] >= 1  # counted as unparsed and wrong, never dropped
    # Training: dropped before the trainer with a count; all-too-long is a clear error, not a crash.
    questions = load_benchmark("bench", "test", tmp_path)
    tokenizer = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    dataset, dropped = build_dataset(questions, tokenizer, template="letter", max_prompt_length=384)
    assert (len(dataset), dropped) == (2, 1) and "1" not in dataset["id"]
    with pytest.raises(ValueError, match="no training prompt fits max_prompt_length=384"):
        build_dataset([questions[1]], tokenizer, template="letter", max_prompt_length=384)


# --------------------------------------------------------------------------------------------------
# Security: safe loading, no secrets in artifacts, no writes outside the run directory
# --------------------------------------------------------------------------------------------------


class _Captured(Exception):
    pass


@pytest.fixture
def captured_loads(monkeypatch, tmp_path):
    """A local model directory, and `from_pretrained` calls recorded (then stopped) instead of loading."""
    import transformers

    calls = []

    def record(kind):
        def from_pretrained(path, *args, **kwargs):
            calls.append((kind, kwargs))
            raise _Captured

        return classmethod(lambda cls, path, *a, **k: from_pretrained(path, *a, **k))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    model_dir = tmp_path / "local-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    return model_dir, calls


@pytest.mark.parametrize("trust", [None, True])  # None: the default
def test_models_load_from_safetensors_without_remote_code_unless_asked(trust, captured_loads, tmp_path):
    from medr1.models.base import load_tokenizer
    from medr1.models.load import load_model
    from medr1.models.load import load_trl_policy as _load_trl

    model_dir, calls = captured_loads
    kwargs = {} if trust is None else {"trust_remote_code": True}
    for load in (lambda: load_model(str(model_dir), device="cpu", **kwargs),
                 lambda: load_tokenizer(str(model_dir), **kwargs),
                 lambda: _load_trl(Params(model=str(model_dir), device="cpu", **kwargs), str(model_dir), "cpu")):
        with pytest.raises(_Captured):
            load()
    assert [k for k, _ in calls] == ["model", "tokenizer", "model"]
    for kind, kw in calls:
        assert kw["trust_remote_code"] is bool(trust), kind
        if kind == "model":
            assert kw["use_safetensors"] is True  # never a pickle (.bin) checkpoint


def test_no_token_reaches_manifest_logs_or_predictions(tmp_path, monkeypatch, caplog):
    from medr1.evaluation.run import evaluate_params
    from medr1.generation.hf import Generation

    token = "hf_" + "S3cr3t" * 6
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "x" * 40)
    # A token pasted on the command line (say, inside a URL) ends up in the recorded command.
    monkeypatch.setattr(sys, "argv", ["medr1", "eval", f"--data-dir=https://user:{token}@example.org/data"])

    def gen(prompts, *, on_batch, **_):
        gens = [Generation(i, [f"Answer: B {os.environ.get('NOTHING', '')}"], 5, [2], ["stop"], 0.0)
                for i in range(len(prompts))]
        on_batch(gens)
        return gens

    params = load_params(SMOKE, {"runs_dir": str(tmp_path), "eval_models": ["base"]})
    with caplog.at_level("DEBUG"):
        evaluate_params(params, progress=False, generate_fn=gen)
    written = {p: p.read_text(errors="replace") for p in (tmp_path / "smoke").rglob("*") if p.is_file()}
    assert any(p.name == "manifest.json" for p in written)
    leaks = [str(p) for p, text in written.items() if token in text or "sk-xxxx" in text]
    assert leaks == [] and token not in caplog.text


@pytest.mark.parametrize("spec", ["../escaped", "/tmp/absolute-model", "..", "a/../../../b", "./x/../../y"])
def test_eval_labels_from_specs_stay_inside_the_run(spec, tmp_path):
    from medr1.evaluation.run import evaluate_params
    from medr1.generation.hf import Generation

    def gen(prompts, *, on_batch, **_):
        gens = [Generation(i, ["Answer: A"], 5, [2], ["stop"], 0.0) for i in range(len(prompts))]
        on_batch(gens)
        return gens

    runs = tmp_path / "runs"
    params = load_params(SMOKE, {"runs_dir": str(runs), "eval_models": [spec]})
    (label,) = evaluate_params(params, progress=False, generate_fn=gen)
    eval_dir = (runs / "smoke" / "eval").resolve()
    assert (eval_dir / label / "summary.json").is_file() and "/" not in label and label not in ("", ".", "..")
    outside = [p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(runs.resolve()) and p != runs]
    assert outside == []


@pytest.mark.parametrize("run_name", ["..", "../x", "a/b", " x"])
def test_run_name_cannot_point_outside_runs_dir(run_name, tmp_path, error_line):
    assert main(["train", "-f", SMOKE, "--set", f"runs_dir={tmp_path}", "--set", f"run_name={run_name!r}"]) == 2
    assert "'run_name'" in error_line("train")
    assert list(tmp_path.iterdir()) == []


def test_eval_out_that_is_a_file_is_refused(tmp_path, error_line, tripwires):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    argv = ["eval", "--model", "embedded:smollm2-135m", "--benchmarks", "mini_test", "--data-dir", str(FIXTURES),
            "--out", str(target)]
    assert main(argv) == 2
    assert "cannot write to" in error_line("eval")
    assert target.read_text() == "keep me"
