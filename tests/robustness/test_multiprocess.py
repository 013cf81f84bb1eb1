"""Several training processes without GPUs: `num_processes: 2` with `device: cpu` runs `medr1.train` under
`accelerate launch` (DDP over gloo, configs/accelerate/cpu.yaml), the documented test mode of what several
GPUs run. Slow (each launch starts two Python processes that load the embedded 135M model), kept tiny.

What is checked: only rank 0 writes metrics, samples, checkpoints and the manifest (each step once);
the global batch and the group size are what params say; a killed launch resumes at its last checkpoint;
two processes and one process on the same global batch log the same first step.
"""

from __future__ import annotations

import json

import pytest
from helpers import kill_training_after_first_checkpoint, small_params

from medr1.artifacts import read_metrics
from medr1.train import train
from medr1.train.checkpoints import last_complete_checkpoint

pytestmark = pytest.mark.slow


def _two(tmp_path, **changes):
    # Near-greedy sampling (top_p keeps only the most likely token): a group's completions no longer depend
    # on which process drew them, so one and two processes can be compared step for step.
    values = dict(num_processes=2, per_device_train_batch_size=2, num_generations=4, max_completion_length=4,
                  max_steps=2, save_steps=1, top_p=1e-9)
    values.update(changes)
    return small_params(tmp_path, **values)


def test_two_processes_write_once_with_the_global_batch_of_params(tmp_path):
    params = _two(tmp_path)
    result = train(params, progress=False, echo=None)
    run, train_dir = result.run_dir, result.run_dir / "train"
    assert result.steps == 2

    # only rank 0 writes: each step once in metrics.csv, one step's samples once
    assert [r["step"] for r in read_metrics(train_dir / "metrics.csv")] == [1, 2]
    samples = [json.loads(x) for x in (train_dir / "samples.jsonl").read_text().splitlines()]
    # global batch = 2 per process x 2 processes = 4 completions per step = one group of num_generations 4,
    # gathered from both ranks (both ranks writing would double the lines)
    per_step = {s: [x for x in samples if x["step"] == s] for s in (1, 2)}
    assert [len(v) for v in per_step.values()] == [4, 4]
    assert all(len({x["id"] for x in v}) == 1 for v in per_step.values())  # one prompt, 4 generations
    assert sorted(p.name for p in train_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((train_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    job = json.loads((run / "manifest.json").read_text())["jobs"]["train"]
    assert job["status"] == "finished" and job["global_step"] == 2
    eff = job["effective_grpo_config"]
    # TRL's generation batch is global: 2 per process x 2 processes, one group of 4
    assert (eff["per_device_train_batch_size"], eff["num_generations"], eff["generation_batch_size"]) == (2, 4, 4)
    assert (run / "train" / "adapter" / "adapter_model.safetensors").is_file()


def test_one_and_two_processes_log_the_same_first_step(tmp_path):
    two = train(_two(tmp_path, run_name="two", max_steps=1, per_device_train_batch_size=4, num_generations=4),
                progress=False, echo=None)
    one = train(_two(tmp_path, run_name="one", max_steps=1, num_processes=1, per_device_train_batch_size=8),
                progress=False)
    a = read_metrics(two.run_dir / "train" / "metrics.csv")[0]
    b = read_metrics(one.run_dir / "train" / "metrics.csv")[0]
    # global batch 8 = 2 prompts x 4 generations in both; rewards are gathered over both ranks
    for key in ("reward", "reward/accuracy", "reward/answer_parsable", "completion_length", "loss", "reward_std"):
        assert a[key] == pytest.approx(b[key], abs=1e-4), key


def test_a_killed_launch_resumes_at_its_last_checkpoint(tmp_path):
    params = _two(tmp_path, max_steps=3)
    # its own session: killing the group takes down the parent, accelerate and both workers, like a node loss
    train_dir = kill_training_after_first_checkpoint(params, timeout=400, process_group=True)
    killed_at = int(last_complete_checkpoint(train_dir).name.split("-")[1])
    assert killed_at < 3

    result = train(params, progress=False, echo=None)
    assert result.steps == 3
    rows = read_metrics(train_dir / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    job = json.loads((params.run_dir / "manifest.json").read_text())["jobs"]["train"]
    assert job["resumed_from"].endswith(f"checkpoint-{killed_at}")
