"""Run directories: layout, lock, manifest and crash-safe writes.

A run directory is the unit a user cites, resumes and plots from, so every file in it is written
atomically (temp file + fsync + rename: a kill -9 leaves the old file or the new one, never half of
one), one process at a time holds it (a lock file naming the owner pid), and `manifest.json` records
what produced it (git sha, package versions, params, data hashes, seed, hardware). Nothing here
imports torch at module level.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medr1.paths import REPO_ROOT

# Packages whose versions change results; recorded in every manifest.
TRACKED_PACKAGES = ("medr1", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy",
                    "unsloth", "unsloth_zoo", "vllm", "papermill", "seaborn")
# Substrings of environment/param keys never written into manifests or logs.
SECRET_MARKERS = ("token", "secret", "password", "api_key", "apikey", "credential")
# Keys that contain a marker but name vocabulary tokens or token counts, not credentials (their values
# still pass the string check below).
NOT_SECRETS = frozenset({"pad_token", "pad_token_id", "generation_pad_token_id", "eval_max_new_tokens",
                         "max_new_tokens", "prompt_tokens", "completion_tokens"})
# Hugging Face and OpenAI-style access tokens, wherever they appear in a string.
_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})")
MIN_FREE_BYTES = 200 * 1024**2
LOCK_TOKEN_ENV = "MEDR1_LOCK_TOKEN"


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


class OutputDirError(OSError):
    """The run directory cannot be written (read-only, disk full, escapes the run directory)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` so that readers (and a crash) see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def safe_child(root: str | Path, relative: str | Path) -> Path:
    """`root / relative`, refusing paths that escape `root` (absolute paths, `..`, symlinks out)."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise OutputDirError(errno.EPERM, f"path {str(relative)!r} escapes the run directory {root}")
    return target


def check_writable(directory: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before work starts when the output directory is read-only or the disk is nearly full."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise OutputDirError(e.errno or errno.EACCES,
                             f"cannot write to {directory}: {e.strerror or e}. Choose another runs_dir "
                             f"or fix the permissions.") from None
    free = shutil.disk_usage(directory).free
    if free < min_free_bytes:
        raise OutputDirError(errno.ENOSPC,
                             f"only {free / 1024**2:.0f} MiB free under {directory}; need at least "
                             f"{min_free_bytes / 1024**2:.0f} MiB. Free some space or choose another runs_dir.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunDir:
    """The layout of `runs/<run_name>/` (see docs/ARCHITECTURE.md)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    # layout ----------------------------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.path / "train"

    @property
    def adapter_dir(self) -> Path:
        return self.train_dir / "adapter"

    @property
    def metrics_csv(self) -> Path:
        return self.train_dir / "metrics.csv"

    @property
    def samples_jsonl(self) -> Path:
        return self.train_dir / "samples.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def notebooks_dir(self) -> Path:
        return self.path / "notebooks"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def child(self, relative: str | Path) -> Path:
        return safe_child(self.path, relative)

    # lock --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, job: str):
        """Hold the run directory for one job. A lock left by a dead process (kill -9) is taken over;
        a live owner makes the second job refuse, naming the owner."""
        self.path.mkdir(parents=True, exist_ok=True)
        # A pipeline exports MEDR1_LOCK_TOKEN so the notebooks it runs (child kernels) may enter its lock.
        token = os.environ.get(LOCK_TOKEN_ENV)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "job": job, "started": time.time(),
              "token": token}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._lock_owner()
                same_host = owner.get("host") == socket.gethostname()
                if owner and same_host and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
                    self.lock_path.unlink(missing_ok=True)  # stale: its owner died without cleaning up
                    continue
                if owner.get("pid") == os.getpid() or (token and owner.get("token") == token):
                    yield self  # re-entrant: same process, or a child of the pipeline holding the lock
                    return
                raise RunLockedError(
                    f"{self.path} is in use by {owner.get('job', '?')} (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}). Wait for it, or use another run_name. If that process "
                    f"is gone, delete {self.lock_path}.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        try:
            yield self
        finally:
            if self._lock_owner().get("pid") == os.getpid():
                self.lock_path.unlink(missing_ok=True)

    def _lock_owner(self) -> dict:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}


def git_sha(repo: Path = REPO_ROOT) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": sys.version.split()[0],
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if "torch" in sys.modules:  # only report CUDA when torch is already loaded: no import cost here
        torch = sys.modules["torch"]
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def redact(values: Any) -> Any:
    """Drop anything that looks like a credential before it reaches a manifest or a log."""
    if isinstance(values, dict):
        return {k: ("<redacted>" if k not in NOT_SECRETS and any(m in str(k).lower() for m in SECRET_MARKERS)
                    else redact(v))
                for k, v in values.items()}
    if isinstance(values, list):
        return [redact(v) for v in values]
    if isinstance(values, str):
        # Anywhere in the string: the recorded command line can carry a token inside a URL or an argument.
        return _TOKEN_RE.sub("<redacted>", values)
    return values


def write_manifest(run: RunDir, *, job: str, params: dict[str, Any], data_hashes: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record what produced the artifacts of `job` in `manifest.json` (one entry per job, kept on reruns)."""
    manifest = {}
    if run.manifest_path.exists():
        with contextlib.suppress(ValueError):
            manifest = json.loads(run.manifest_path.read_text())
    manifest.setdefault("jobs", {})[job] = redact({
        "finished_or_updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "params": params,
        "seed": params.get("seed"),
        "data_hashes": data_hashes or {},
        "hardware": hardware(),
        "command": " ".join(sys.argv),
        **(extra or {}),
    })
    atomic_write_json(run.manifest_path, manifest)
    return manifest


TRAIN_SETTINGS_FILE = "settings.json"  # train/settings.json: the model-shaping params a training started with


def recorded_training_settings(run: RunDir) -> dict | None:
    """The model-shaping params `run`'s training was started with: train/settings.json, else (a run from
    before that file) the params of the manifest's train job; None when no training is there (an empty or
    deleted train/ holds none, whatever the manifest says). Compared by `medr1.training_settings.changed_training_settings`."""
    if not run.train_dir.is_dir() or not any(run.train_dir.iterdir()):
        return None
    try:
        return json.loads((run.train_dir / TRAIN_SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        pass
    try:
        before = json.loads(run.manifest_path.read_text())["jobs"]["train"]["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return before if isinstance(before, dict) else None
