"""Multi-GPU training: run `medr1.train` under `accelerate launch` as a subprocess and stream its output.

Why a subprocess: a notebook (or `medr1 train`) is one Python process, but data-parallel and DeepSpeed
training need one process per GPU, started by accelerate. So the caller's `train()` keeps the run lock,
writes the resolved params into the run directory, and starts

    python -m accelerate.commands.launch --num_processes N --config_file configs/accelerate/<cfg>.yaml \
        --module medr1.train -f runs/<run>/params.yaml

with `MEDR1_INSIDE_LAUNCH=1` in the environment. The workers see that flag and train in-process (they
neither take the lock, which the parent holds, nor launch again). Every output line is passed to the
caller as it arrives, so a notebook shows progress live, and the tail of the log goes into the error when
the launch fails, so the failure is readable without opening a file.

`python -m accelerate.commands.launch` (not the `accelerate` script) so the launcher is always the one of
the running interpreter, whatever PATH says. This module imports neither torch nor accelerate.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from medr1.paths import REPO_ROOT

INSIDE_LAUNCH_ENV = "MEDR1_INSIDE_LAUNCH"
ACCELERATE_CONFIG_DIR = REPO_ROOT / "configs" / "accelerate"
# params.deepspeed -> accelerate config file; "none" is plain DistributedDataParallel.
ACCELERATE_CONFIGS = {"none": "ddp.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml"}


class LaunchError(RuntimeError):
    """`accelerate launch` exited with an error; the message carries the tail of its output."""


def inside_launch() -> bool:
    """True in a worker process started by `run_launch` (train in-process, never launch again)."""
    return os.environ.get(INSIDE_LAUNCH_ENV) == "1"


def accelerate_config_path(deepspeed: str) -> Path:
    """The accelerate config file for a `deepspeed` param value ("none", "zero2", "zero3").

    >>> accelerate_config_path("zero3").name
    'zero3.yaml'
    """
    if deepspeed not in ACCELERATE_CONFIGS:
        raise ValueError(f"deepspeed must be one of {sorted(ACCELERATE_CONFIGS)}, got {deepspeed!r}")
    return ACCELERATE_CONFIG_DIR / ACCELERATE_CONFIGS[deepspeed]


def build_launch_command(params, params_file: str | os.PathLike, *, progress: bool = True) -> list[str]:
    """The `accelerate launch` command line that trains `params_file` on `params.num_processes` GPUs.

    Args:
        params: the run's `Params` (reads `num_processes`, `deepspeed`, `seed`).
        params_file: the resolved params YAML the workers load (the run's own `params.yaml`).
        progress: pass `--no-progress` to the workers when False.

    Returns:
        argv for `subprocess`, starting with the current interpreter.

    >>> from medr1.config import Params
    >>> cmd = build_launch_command(Params(num_processes=2, per_device_train_batch_size=8), "p.yaml")
    >>> cmd[cmd.index("--num_processes") + 1], cmd[-2:]
    ('2', ['-f', 'p.yaml'])
    """
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", str(params.num_processes),
        "--num_machines", "1",
        "--config_file", str(accelerate_config_path(params.deepspeed)),
        "--main_process_port", str(29500 + params.seed % 1000),  # two runs on one host must not collide
        "--module", "medr1.train",
    ]
    if not progress:
        cmd.append("--no-progress")
    return [*cmd, "-f", str(params_file)]


def run_launch(cmd: list[str], *, log_path: str | os.PathLike | None = None,
               echo: Callable[[str], None] | None = print, tail_lines: int = 60,
               env: dict[str, str] | None = None) -> None:
    """Run `cmd` with the inside-launch flag set, stream its merged stdout/stderr line by line, and wait.

    Args:
        cmd: from `build_launch_command`.
        log_path: every line is also appended here (e.g. `runs/<run>/train/launch.log`).
        echo: called with each line (without newline); None to stay quiet.
        tail_lines: how many last lines the error message quotes.
        env: extra environment variables.

    Raises:
        LaunchError: non-zero exit status, with the last `tail_lines` lines of output.
    """
    full_env = {**os.environ, **(env or {}), INSIDE_LAUNCH_ENV: "1", "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - closed in finally
    try:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                              cwd=REPO_ROOT, env=full_env, errors="replace") as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    line = line.rstrip("\n")
                    tail.append(line)
                    if log:
                        log.write(line + "\n")
                        log.flush()
                    if echo:
                        echo(line)
                rc = proc.wait()
            except BaseException:
                proc.kill()  # a notebook interrupt must not leave GPU workers behind
                raise
    finally:
        if log:
            log.close()
    if rc != 0:
        raise LaunchError(f"accelerate launch exited with status {rc}: {' '.join(cmd)}\n"
                          f"--- last {len(tail)} lines ---\n" + "\n".join(tail))
