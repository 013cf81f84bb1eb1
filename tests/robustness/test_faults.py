"""Fault tolerance of the entry points: kill -9 at any moment, a full or read-only disk, two jobs on one
directory.

What a reviewer must be able to trust after a crash: a rerun of the same command continues from the last
*complete* state, never from half-written files, and the artifacts hold every step and every question
exactly once. So the kills here are real SIGKILLs of real processes (no cleanup code runs), placed
deterministically where they hurt (inside generation, inside the optimizer step, halfway through
writing a checkpoint's weights) through a small runner that patches the function in question to kill
its own process, plus one kill at a seeded random moment. The resource checks are tested at the entry
points (`medr1 train | eval | pipeline`), with anything that would load a model or run a notebook
replaced by a tripwire, because "fails before work starts" is a property of the entry point, not of
`check_writable` alone (tests/test_runs.py tests that).

Slow tests run the embedded SmolLM2-135M on CPU with the smallest settings that still do GRPO (groups
of 2, 8 completion tokens, rank-2 LoRA on two projections).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, namedtuple
from pathlib import Path

import pytest
from helpers import SMALLER_TRAINING, kill_training_after_first_checkpoint, run_eval, small_params

from medr1.artifacts import read_metrics, read_predictions
from medr1.cli import main
from medr1.config import Params
from medr1.data import load_benchmark
from medr1.paths import PARAMS_DIR, REPO_ROOT
from medr1.train import train
from medr1.train.checkpoints import is_complete_checkpoint, last_complete_checkpoint

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "toyqa"
SMOKE = str(PARAMS_DIR / "smoke.yaml")


def train_params(tmp_path: Path, **changes) -> Params:
    """params/smoke.yaml made smaller: one question of 2 completions per step."""
    return small_params(tmp_path, fixture="toyqa", run_name="f", **{**SMALLER_TRAINING, **changes})


def _eval_argv(out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", "embedded:smollm2-135m", "--benchmarks", "mini_test", "--data-dir", str(FIXTURES),
            "--template", "letter", "--max-new-tokens", "8", "--batch-size", "1", "--backend", "hf", "--out",
            str(out), *extra]


# --------------------------------------------------------------------------------------------------
# Disk full / read-only output, at the entry points
# --------------------------------------------------------------------------------------------------

ENTRY_POINTS = {
    # command -> (argv for an output root, the directory the command would write into)
    "train": lambda root: (["train", "-f", SMOKE, "--set", f"runs_dir={root}"], root / "smoke"),
    "eval": lambda root: (_eval_argv(root / "eval"), root / "eval"),
    "pipeline": lambda root: (["pipeline", "-f", SMOKE, "--set", f"runs_dir={root}"], root / "smoke"),
}


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_full_disk_is_refused_before_any_work(command, tmp_path, monkeypatch, error_line, tripwires):
    import medr1.runs

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(medr1.runs.shutil, "disk_usage", lambda _: usage(10**12, 10**12 - 2**20, 2**20))
    argv, out = ENTRY_POINTS[command](tmp_path / "runs")
    assert main(argv) == 2
    assert "only 1 MiB free" in error_line(command)
    # Nothing was started: no lock, no params, no predictions, no notebooks (the write probe is gone too).
    leftovers = [p for p in out.rglob("*")] if out.exists() else []
    assert leftovers == []


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_unwritable_output_is_refused_before_any_work(command, tmp_path, error_line, tripwires):
    blocker = tmp_path / "a_file"  # a directory cannot be created under a file, not even by root
    blocker.write_text("")
    argv, _ = ENTRY_POINTS[command](blocker / "runs")
    assert main(argv) == 2
    assert "cannot write to" in error_line(command)
    assert blocker.read_text() == ""


# --------------------------------------------------------------------------------------------------
# Two jobs on one directory
# --------------------------------------------------------------------------------------------------


def _hold_lock(directory: Path, job: str) -> None:
    # pid 1 is always alive and is not us: a second live job owns the directory.
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "job": job}))


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_second_job_on_a_live_directory_refuses(command, tmp_path, error_line, tripwires):
    argv, out = ENTRY_POINTS[command](tmp_path / "runs")
    _hold_lock(out, "train")
    before = (out / ".lock").read_text()
    assert main(argv) == 2
    assert "is in use by train (pid 1" in error_line(command)
    assert (out / ".lock").read_text() == before  # the owner's lock is untouched
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_train_without_resume_refuses_an_earlier_training(tmp_path, tripwires):
    params = train_params(tmp_path)
    (params.run_dir / "train" / "checkpoint-1").mkdir(parents=True)  # an earlier, unfinished training
    with pytest.raises(RuntimeError, match="resume is false.*resume: true.*force: true"):
        train(params.replace(resume=False), progress=False)
    assert not (params.run_dir / "params.yaml").exists()


def test_eval_cli_refuses_to_mix_settings(tmp_path, monkeypatch, capsys, error_line):
    # A finished evaluation, then the same --out with another template: one clear line, exit 2.
    import medr1.generation.backends

    monkeypatch.setattr(medr1.generation.backends, "hf_generate_fn", lambda *a, **k: answer_first_option)
    out = tmp_path / "eval"
    assert main(_eval_argv(out)) == 0
    capsys.readouterr()
    assert main([*_eval_argv(out)[:-2], "--template", "r1", "--out", str(out)]) == 2
    assert "other settings (template: 'letter' there, 'r1' now)" in error_line("eval")
    assert len(read_predictions(out / "predictions.jsonl")) == 8  # the old predictions are intact


# --------------------------------------------------------------------------------------------------
# Evaluation killed mid-stream (a real process; the generator is a fake, so this is fast)
# --------------------------------------------------------------------------------------------------

FAKE_GENERATOR = r'''
import hashlib, json, time
from medr1.generation.hf import Generation

def answer_first_option(prompts, *, batch_size, num_samples, on_batch, delay=0.0, **_):
    """Answers with a letter that is a function of the prompt, one batch at a time."""
    out = []
    for start in range(0, len(prompts), batch_size):
        gens = []
        for i in range(start, min(start + batch_size, len(prompts))):
            letter = "ABCD"[hashlib.sha256(json.dumps(prompts[i]).encode()).digest()[0] % 4]
            gens.append(Generation(i, [f"Answer: {letter}"] * num_samples, 10, [3] * num_samples,
                                   ["stop"] * num_samples, 0.0))
        on_batch(gens)
        out += gens
        time.sleep(delay)
    return out
'''
_namespace: dict = {}
exec(FAKE_GENERATOR, _namespace)  # the same generator in this process and in the killed one
answer_first_option = _namespace["answer_first_option"]

EVAL_RUNNER = FAKE_GENERATOR + r'''
import functools, sys
from medr1.evaluation.evaluate import EvalSettings, evaluate_model
settings = EvalSettings.from_params(None, template="letter", max_new_tokens=8, batch_size=1, data_dir=sys.argv[2],
                                    seed=0)
evaluate_model("org/fake", ["mini_test"], sys.argv[1], settings, progress=False,
               generate_fn=functools.partial(answer_first_option, delay=0.4))
'''


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.time() + timeout
    while True:
        lines = path.read_text().count("\n") if path.exists() else 0
        if lines >= n or proc.poll() is not None:
            return lines
        assert time.time() < deadline, f"fewer than {n} predictions after {timeout} s"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: lock and partial files stay as a crash leaves them
    proc.wait()


def test_eval_process_killed_mid_stream_resumes_exactly_once(tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.Popen([sys.executable, "-c", EVAL_RUNNER, str(out), str(FIXTURES)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = _wait_for_lines(out / "predictions.jsonl", 3, proc, timeout=60)
    finally:
        _kill(proc)
    assert 3 <= done < 8, "the process was not killed mid-stream"
    assert (out / ".lock").exists()  # left behind by the dead process; taken over below
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "ms7", "benchmark": "mini_test", "comp')  # a row torn by the kill

    calls = []

    def counting(prompts, **kwargs):
        calls.append(len(prompts))
        return answer_first_option(prompts, **kwargs)


    kwargs = dict(template="letter", max_new_tokens=8, batch_size=1, data_dir=FIXTURES, progress=False)
    summary = run_eval("org/fake", ["mini_test"], out, generate_fn=counting, **kwargs)
    assert calls == [8 - done]  # only the questions without a complete row
    ids = [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 8  # exactly one prediction per question, the torn one repaired
    fresh = run_eval("org/fake", ["mini_test"], tmp_path / "fresh", generate_fn=answer_first_option, **kwargs)
    assert summary["scores"] == fresh["scores"]  # indistinguishable from an uninterrupted run
    assert not (out / ".lock").exists()


# --------------------------------------------------------------------------------------------------
# Pipeline entry point
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("only", [
    "01_data_preparation,02_reward_desing",  # a typo: named with the allowed names
    "../../../tmp/evil",  # a notebook name is a path: it must not reach outside notebooks/ and the run
])
def test_pipeline_refuses_unknown_notebooks_before_running_any(only, tmp_path, error_line, tripwires):
    assert main(["pipeline", "-f", SMOKE, "--set", f"runs_dir={tmp_path}", "--only", only]) == 2
    line = error_line("pipeline")
    assert "unknown notebook(s)" in line and "01_data_preparation" in line and "05_figures" in line
    assert not (tmp_path / "smoke").exists()


# --------------------------------------------------------------------------------------------------
# Slow: real training killed at chosen and random moments
# --------------------------------------------------------------------------------------------------

# Runs `medr1.train` with one function patched to SIGKILL its own process at the moment under test.
KILL_RUNNER = r'''
import os, signal, sys
from pathlib import Path

params_file, point, step, train_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def in_step():  # step `step` is under way once the checkpoint of the step before it is complete
    from medr1.train.checkpoints import is_complete_checkpoint
    return step == 1 or is_complete_checkpoint(train_dir / f"checkpoint-{step - 1}")

if point == "checkpoint":  # halfway through the weights of checkpoint-<step>: before trainer_state.json
    import safetensors.torch  # patched before peft imports its own reference to save_file
    real_save = safetensors.torch.save_file
    def save_file(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        if Path(filename).parent.name == f"checkpoint-{step}":
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            die()
    safetensors.torch.save_file = save_file
elif point == "generation":  # TRL's model.generate, or medr1's shared-prefill sampler that replaces it on CPU
    from transformers.generation.utils import GenerationMixin
    import medr1.train.sampling
    real_generate, real_sample = GenerationMixin.generate, medr1.train.sampling.sample_token_ids
    def generate(self, *args, **kwargs):
        if in_step():
            die()
        return real_generate(self, *args, **kwargs)
    def sample_token_ids(*args, **kwargs):
        if in_step():
            die()
        return real_sample(*args, **kwargs)
    GenerationMixin.generate = generate
    medr1.train.sampling.sample_token_ids = sample_token_ids
elif point == "optimizer":
    import torch
    real_step = torch.optim.AdamW.step
    def optimizer_step(self, *args, **kwargs):
        if in_step():
            die()
        return real_step(self, *args, **kwargs)
    torch.optim.AdamW.step = optimizer_step

from medr1.train.recipe import train_from_cli
train_from_cli(["-f", params_file, "--no-progress"])
'''


def _steps(path: Path) -> list[int]:
    return [int(r["step"]) for r in read_metrics(path)]


def _sample_steps(path: Path) -> Counter:
    return Counter(json.loads(x)["step"] for x in path.read_text().splitlines())


def _assert_finished_cleanly(params: Params, result, steps: int) -> None:
    train_dir = params.run_dir / "train"
    assert result.steps == steps and not result.skipped
    assert _steps(train_dir / "metrics.csv") == list(range(1, steps + 1))  # no gap, no duplicate
    # Every step's completions exactly once (num_generations per step, sample_every 1).
    assert _sample_steps(train_dir / "samples.jsonl") == {s: params.num_generations for s in range(1, steps + 1)}
    assert all(is_complete_checkpoint(p) for p in train_dir.glob("checkpoint-*"))
    assert json.loads((train_dir / f"checkpoint-{steps}" / "trainer_state.json").read_text())["global_step"] == steps
    assert json.loads((train_dir / "complete.json").read_text())["global_step"] == steps
    assert (train_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (params.run_dir / ".lock").exists()
    assert not [p for p in train_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


@pytest.mark.slow
def test_kills_in_generation_optimizer_step_and_checkpoint_write_resume_cleanly(tmp_path):
    params = train_params(tmp_path, max_steps=3)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(params.to_yaml())
    train_dir = params.run_dir / "train"
    # (where the process dies, in which step, the last complete checkpoint after the kill, steps in metrics.csv)
    kills = [
        ("generation", 2, 1, [1]),  # step 2 sampling: nothing of step 2 on disk yet
        ("optimizer", 3, 2, [1, 2]),  # step 3 after its backward, before the update: not logged yet
        ("checkpoint", 3, 2, [1, 2, 3]),  # step 3 logged, checkpoint-3 torn: its row must be redone
    ]
    for point, step, last_complete, logged in kills:
        proc = subprocess.run([sys.executable, "-c", KILL_RUNNER, str(params_file), point, str(step), str(train_dir)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
        assert proc.returncode == -signal.SIGKILL, f"{point}: the kill never happened\n{proc.stderr[-3000:]}"
        assert last_complete_checkpoint(train_dir).name == f"checkpoint-{last_complete}", point
        assert _steps(train_dir / "metrics.csv") == logged, point
        assert (params.run_dir / ".lock").exists()  # the dead process's lock, taken over by the next run
    torn = train_dir / "checkpoint-3"
    assert torn.is_dir() and not is_complete_checkpoint(torn)  # a half-written checkpoint is on disk...

    result = train(params, progress=False)
    assert result.resumed_from == train_dir / "checkpoint-2"  # ...and it was not picked up
    _assert_finished_cleanly(params, result, 3)


@pytest.mark.slow
def test_kill_after_the_last_checkpoint_finishes_without_an_extra_step(tmp_path):
    # Killed between checkpoint-<max_steps> and the final adapter: transformers' Trainer, resumed at
    # max_steps, would train one step more (found by the random-kill test below).
    params = train_params(tmp_path, max_steps=2)
    assert train(params, progress=False).steps == 2
    train_dir = params.run_dir / "train"
    (train_dir / "complete.json").unlink()
    os.replace(train_dir / "adapter", train_dir / ".adapter.tmp-99999")  # the kill came mid-save
    result = train(params, progress=False)
    assert result.resumed_from.name == "checkpoint-2"
    _assert_finished_cleanly(params, result, 2)


@pytest.mark.slow
def test_kill_at_a_seeded_random_moment_resumes_cleanly(tmp_path):
    params = train_params(tmp_path, max_steps=2)
    delays = []

    def into_step_two(train_dir):
        # Anywhere in step 2 (sampling, loss, optimizer, logging, checkpoint-2) or just after it.
        step_time = read_metrics(train_dir / "metrics.csv")[0]["step_time"]
        delays.append((random.Random(20261125).uniform(0.0, 1.2 * step_time), step_time))
        time.sleep(delays[0][0])

    train_dir = kill_training_after_first_checkpoint(params, timeout=300, poll=0.2, before_kill=into_step_two)
    delay, step_time = delays[0]
    print(f"killed {delay:.1f} s into step 2 (step 1 took {step_time:.1f} s); "
          f"last complete checkpoint: {last_complete_checkpoint(train_dir).name}")

    result = train(params, progress=False)
    if result.skipped:  # the kill came after the training finished: nothing may be redone
        assert result.steps == 2 and _steps(train_dir / "metrics.csv") == [1, 2]
    else:
        _assert_finished_cleanly(params, result, 2)


@pytest.mark.slow
def test_eval_cli_killed_mid_stream_resumes_exactly_once(tmp_path):
    out = tmp_path / "eval"
    argv = [*_eval_argv(out), "--limit", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "medr1", *argv], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        done = _wait_for_lines(out / "predictions.jsonl", 2, proc, timeout=240)
    finally:
        _kill(proc)
    assert 2 <= done < 4, "the process was not killed mid-stream"
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "ms3", "benchmark": "mini_')  # a row torn by the kill
    assert main(argv) == 0  # the same command resumes
    rows = read_predictions(out / "predictions.jsonl")
    # --limit 4 is a seeded subset (the seed is the params' default, as for every subcommand): each of its
    # questions exactly once.
    expected = sorted(q.id for q in load_benchmark("mini_test", data_dir=FIXTURES, limit=4, sample_seed=Params().seed))
    assert sorted(r["id"] for r in rows) == expected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_questions"] == 4 and summary["generated_now"] == 4 - done
    assert summary["scores"]["strict"]["mini_test"]["n"] == 4
