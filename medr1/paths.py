"""Where things are. Defined once so that notebooks (whose working directory is `notebooks/` under
Jupyter, or wherever papermill was started) and the CLI resolve the same files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
FIGURES_DIR = REPO_ROOT / "figures"
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
# Converted checkpoints of embedded models live outside the repo so that a fresh clone, CI and every
# run share one conversion.
CACHE_DIR = Path(os.environ.get("MEDR1_CACHE_DIR", Path.home() / ".cache" / "medr1"))


def resolve_repo_path(path: str | os.PathLike) -> Path:
    """Relative paths in params are relative to the repo root, not to the current directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks: images and model weights can be gigabytes.
    Here, at the ground floor, because data (image hashes) and models (weight hashes) both need it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
