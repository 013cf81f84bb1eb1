"""Tests for medr1/train/launch.py: the accelerate command line, the shipped accelerate configs, and the
streaming runner (on a tiny Python command: no GPU, no accelerate start-up)."""

from __future__ import annotations

import sys

import pytest
import yaml

from medr1.config import Params
from medr1.train.launch import (
    ACCELERATE_CONFIGS,
    INSIDE_LAUNCH_ENV,
    LaunchError,
    accelerate_config_path,
    build_launch_command,
    run_launch,
)


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize(
    "deepspeed, processes, config_name, distributed_type, zero_stage",
    [
        ("none", 2, "ddp.yaml", "MULTI_GPU", None),  # plain DDP
        ("zero2", 4, "zero2.yaml", "DEEPSPEED", 2),  # optimizer + gradient sharding
        ("zero3", 8, "zero3.yaml", "DEEPSPEED", 3),  # parameter sharding too
    ],
)
def test_build_launch_command(deepspeed, processes, config_name, distributed_type, zero_stage):
    params = Params(num_processes=processes, deepspeed=deepspeed, per_device_train_batch_size=8)
    cmd = build_launch_command(params, "/runs/x/params.yaml")
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert _arg(cmd, "--num_processes") == str(processes)
    assert _arg(cmd, "--config_file").endswith(f"configs/accelerate/{config_name}")
    assert _arg(cmd, "--module") == "medr1.train"  # the worker entry, train_from_cli
    assert cmd[-2:] == ["-f", "/runs/x/params.yaml"]
    config = yaml.safe_load(accelerate_config_path(deepspeed).read_text())
    assert config["distributed_type"] == distributed_type
    assert config.get("deepspeed_config", {}).get("zero_stage") == zero_stage


def test_cpu_test_mode_uses_the_gloo_config():
    params = Params(num_processes=2, per_device_train_batch_size=4, device="cpu")
    cmd = build_launch_command(params, "p.yaml", cpu=True)
    assert _arg(cmd, "--config_file").endswith("configs/accelerate/cpu.yaml")
    config = yaml.safe_load(accelerate_config_path("none", cpu=True).read_text())
    # the multi-process launcher (torch.distributed.run), fp32 like a one-process CPU run
    assert (config["distributed_type"], config["mixed_precision"], config["use_cpu"]) == ("MULTI_GPU", "no", False)
    with pytest.raises(ValueError, match="needs CUDA GPUs"):
        accelerate_config_path("zero2", cpu=True)


def test_no_progress_flag_reaches_the_workers():
    cmd = build_launch_command(Params(num_processes=2, per_device_train_batch_size=8), "p.yaml", progress=False)
    assert "--no-progress" in cmd[cmd.index("--module"):]


def test_every_deepspeed_value_has_a_config_file():
    assert set(ACCELERATE_CONFIGS) == {"none", "zero2", "zero3"}
    for value in ACCELERATE_CONFIGS:
        assert accelerate_config_path(value).is_file()
    with pytest.raises(ValueError, match="deepspeed must be one of"):
        accelerate_config_path("zero1")


def test_run_launch_streams_lines_and_sets_the_inside_flag(tmp_path):
    seen = []
    code = f"import os; print('a'); print(os.environ['{INSIDE_LAUNCH_ENV}'])"
    run_launch([sys.executable, "-c", code], log_path=tmp_path / "log", echo=seen.append)
    assert seen == ["a", "1"]
    assert (tmp_path / "log").read_text() == "a\n1\n"


def test_run_launch_failure_quotes_the_tail():
    code = "import sys; [print(i) for i in range(100)]; sys.exit(3)"
    with pytest.raises(LaunchError, match=r"status 3") as err:
        run_launch([sys.executable, "-c", code], echo=None, tail_lines=5)
    assert "95\n96\n97\n98\n99" in str(err.value) and "\n94\n" not in str(err.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_worker_dies_with_its_killed_launcher(tmp_path):
    # torch.distributed.run starts workers in sessions of their own: killing the launcher's process group
    # does not reach them. die_with_parent arms a death signal so that they stop too.
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "worker.pid"
    worker = ("import os, time, pathlib; from medr1.train.launch import die_with_parent; "
              f"assert die_with_parent(); pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(60)")
    launcher = ("import subprocess, sys, time; "
                f"subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", launcher], env={**os.environ})
    deadline = time.time() + 30
    while not pid_file.exists():
        assert time.time() < deadline, "worker did not start"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break  # gone
        if time.time() > deadline:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the worker outlived its launcher")
        time.sleep(0.1)



# Keys of an accelerate config's `deepspeed_config` that belong to the launcher, not to DeepSpeedPlugin.
LAUNCHER_ONLY = {"deepspeed_multinode_launcher"}


@pytest.mark.parametrize("deepspeed, stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_configs_build_accelerates_plugin(deepspeed, stage):
    # What `accelerate launch` does with these files on GPUs: every key must be a DeepSpeedPlugin field and
    # the plugin must build into a DeepSpeed config of the intended stage. accelerate 1.15 builds the plugin
    # without the deepspeed package, so this runs here; starting DeepSpeed itself needs GPUs.
    import dataclasses

    from accelerate.utils import DeepSpeedPlugin

    values = yaml.safe_load(accelerate_config_path(deepspeed).read_text())["deepspeed_config"]
    fields = {f.name for f in dataclasses.fields(DeepSpeedPlugin)}
    unknown = set(values) - fields - LAUNCHER_ONLY
    assert not unknown, f"{deepspeed}.yaml: keys DeepSpeedPlugin does not know: {unknown}"
    plugin = DeepSpeedPlugin(**{k: v for k, v in values.items() if k in fields})
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    if stage == 3:
        assert plugin.zero3_init_flag and zero["stage3_gather_16bit_weights_on_model_save"] is True
