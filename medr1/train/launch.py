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
# Several processes without GPUs (DDP over gloo): a test mode, see the file's header.
CPU_CONFIG = "cpu.yaml"


class LaunchError(RuntimeError):
    """`accelerate launch` exited with an error; the message carries the tail of its output."""


def inside_launch() -> bool:
    """True in a worker process started by `run_launch` (train in-process, never launch again)."""
    return os.environ.get(INSIDE_LAUNCH_ENV) == "1"


def die_with_parent() -> bool:
    """Make this worker die (SIGKILL) when the process that started it dies; Linux only, else a no-op.

    Why: torch.distributed.run (which `accelerate launch` runs) starts each worker in a session of its own,
    so killing the launch (kill -9 of `medr1 train`, a notebook interrupt, a lost node's job step) left the
    workers running, still writing checkpoints and metrics into the run directory that the resumed run was
    writing too (found by tests/robustness/test_multiprocess.py: a step logged twice after resume). Called by every
    worker before it trains. Returns whether the death signal is armed.
    """
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os._exit(1)
    return True


def accelerate_config_path(deepspeed: str, *, cpu: bool = False) -> Path:
    """The accelerate config file for a `deepspeed` param value ("none", "zero2", "zero3"); with `cpu`,
    the CPU test mode's (DDP over gloo; DeepSpeed needs GPUs).

    >>> accelerate_config_path("zero3").name
    'zero3.yaml'
    """
    if cpu:
        if deepspeed != "none":
            raise ValueError(f"deepspeed {deepspeed!r} needs CUDA GPUs; the CPU multi-process test mode runs "
                             f"plain DDP (deepspeed: none)")
        return ACCELERATE_CONFIG_DIR / CPU_CONFIG
    if deepspeed not in ACCELERATE_CONFIGS:
        raise ValueError(f"deepspeed must be one of {sorted(ACCELERATE_CONFIGS)}, got {deepspeed!r}")
    return ACCELERATE_CONFIG_DIR / ACCELERATE_CONFIGS[deepspeed]


def build_launch_command(params, params_file: str | os.PathLike, *, progress: bool = True,
                         cpu: bool = False) -> list[str]:
    """The `accelerate launch` command line that trains `params_file` on `params.num_processes` GPUs.

    Args:
        params: the run's `Params` (reads `num_processes`, `deepspeed`, `seed`).
        params_file: the resolved params YAML the workers load (the run's own `params.yaml`).
        progress: pass `--no-progress` to the workers when False.
        cpu: the CPU test mode (`configs/accelerate/cpu.yaml`: N processes, DDP over gloo).

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
        "--config_file", str(accelerate_config_path(params.deepspeed, cpu=cpu)),
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
