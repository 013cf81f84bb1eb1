"""Tests for medr1/launch.py: the accelerate command line, the shipped accelerate configs, and the
streaming runner (on a tiny Python command: no GPU, no accelerate start-up)."""

from __future__ import annotations

import sys

import pytest
import yaml

from medr1.config import Params
from medr1.launch import (
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
