"""Where things are. Defined once so that notebooks (whose working directory is `notebooks/` under
Jupyter, or wherever papermill was started) and the CLI resolve the same files."""

from __future__ import annotations

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
