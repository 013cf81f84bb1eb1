"""The notebook pipeline: papermill runs the numbered notebooks in order into the run directory.

Each notebook is executed with the run's resolved params file (`params_file`) plus the params it declares
in its `parameters` cell, so a notebook run alone (`papermill -f params/X.yaml`) and the pipeline see
the same values. A finished notebook leaves a marker holding the params hash: rerunning skips it unless
the params changed or `force` is set, so an interrupted pipeline continues from the notebook that failed.
A forced rerun deletes the run's old artifacts first, so nothing from an earlier run is mixed in. A run
whose training was started with other model-shaping params is refused before any notebook runs, naming
the changed keys (`medr1.training_settings.changed_training_settings`); evaluation refuses predictions made
from another adapter or model (`medr1.evaluation.evaluate`), so no stale result is reported under new params.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from medr1.config import Params, load_params
from medr1.models.load import check_model_spec
from medr1.models.vision import is_vision_spec
from medr1.paths import NOTEBOOKS_DIR, REPO_ROOT
from medr1.runs import LOCK_TOKEN_ENV, RunDir, atomic_write_json, atomic_write_text, check_writable
from medr1.training_settings import changed_training_settings, describe_changes

NOTEBOOKS = ("01_data_preparation", "02_reward_design", "03_grpo_training", "04_evaluation", "05_figures")
# Run after the others only when the params ask for a vision-language model (`default_notebooks`).
VISION_NOTEBOOKS = ("06_vision_grpo",)
# Artifacts a forced rerun removes; anything else a user put in the run directory stays.
RUN_ARTIFACTS = ("train", "eval", "notebooks", "figures", "data", "rewards", "results.md", "results.csv",
                 "manifest.json", "params.yaml")


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and papermill's error."""


@dataclass
class StepResult:
    notebook: str
    status: str  # "ran" | "skipped"
    seconds: float
    output: Path


def params_hash(params: Params) -> str:
    # `force` and `resume` change how a run starts, not what it computes.
    values = {k: v for k, v in params.to_dict().items() if k not in ("force", "resume")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def notebook_parameters(path: Path) -> list[str]:
    """Names declared in a notebook's `parameters` cell (papermill's own parser)."""
    import papermill

    return list(papermill.inspect_notebook(str(path)).keys())


def default_notebooks(params: Params) -> tuple[str, ...]:
    """The notebooks a pipeline runs: the numbered five, plus 06_vision_grpo when `params.model` is a
    vision-language model (its images and completions mean nothing for a text model)."""

    return NOTEBOOKS + VISION_NOTEBOOKS if is_vision_spec(params.model) else NOTEBOOKS


def _done_marker(run: RunDir, name: str) -> Path:
    return run.notebooks_dir / f".{name}.done.json"


def clean_run(run: RunDir) -> None:
    for name in RUN_ARTIFACTS:
        target = run.path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@contextlib.contextmanager
def _lock_token():
    """Export a token for the pipeline's lifetime: its notebook kernels inherit it and may enter its lock.
    Restored afterwards, so a later job in the same process is not mistaken for one of ours."""
    previous = os.environ.get(LOCK_TOKEN_ENV)
    os.environ[LOCK_TOKEN_ENV] = previous or uuid.uuid4().hex
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOCK_TOKEN_ENV, None)


def run_pipeline(params_file: str | Path | None = None, overrides=None, *, notebooks=None,
                 force: bool | None = None, log=print, kernel_name: str = "python3") -> list[StepResult]:
    """Execute the notebooks in order; stop at the first failure with papermill's error.

    Args:
        params_file: YAML params (e.g. params/demo.yaml).
        overrides: dict or `key=value` strings applied on top.
        notebooks: names (without .ipynb) to run, in order (default: `default_notebooks(params)`).
        force: rerun every notebook from a clean run directory (default: the params' `force`).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = load_params(params_file, overrides)
    # Checked here, not in a notebook: a typo must fail in a second, not after the notebooks before it ran,
    # and a notebook name is a path (an unknown one could read or write outside the run directory).
    notebooks = default_notebooks(params) if notebooks is None else notebooks
    if unknown := [n for n in notebooks if n not in NOTEBOOKS + VISION_NOTEBOOKS]:
        raise PipelineError(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS + VISION_NOTEBOOKS)}")
    check_model_spec(params.model)
    logging.getLogger("papermill").setLevel(logging.WARNING)  # our one line per notebook is the progress
    force = params.force if force is None else force
    run = RunDir(params.run_dir)
    check_writable(run.path.parent)
    results = []
    with _lock_token(), run.lock("pipeline"):
        if force:
            clean_run(run)
        elif changed := changed_training_settings(run, params):
            # Checked before any notebook: rerunning them over an adapter trained under other settings would
            # report the old model under the new params.
            raise PipelineError(f"{run.path} holds a training started with other settings "
                                f"({describe_changes(changed)}). Rerun with --force to start the run over "
                                f"(or set force: true), or choose another run_name.")
        run.notebooks_dir.mkdir(parents=True, exist_ok=True)
        resolved = run.path / "params.yaml"
        # Children see the resolved params with force off: the pipeline has already cleaned up.
        atomic_write_text(resolved, params.replace(force=False).to_yaml())
        digest = params_hash(params)
        for i, name in enumerate(notebooks, 1):
            source = NOTEBOOKS_DIR / f"{name}.ipynb"
            output = run.notebooks_dir / f"{name}.ipynb"
            marker = _done_marker(run, name)
            prefix = f"[{i}/{len(notebooks)}] {name}"
            if not force and marker.is_file() and json.loads(marker.read_text()).get("params_hash") == digest:
                log(f"{prefix}: done earlier, skipped (force: true reruns it)")
                results.append(StepResult(name, "skipped", 0.0, output))
                continue
            declared = notebook_parameters(source)
            values = {k: v for k, v in params.replace(force=False).to_dict().items() if k in declared}
            if "params_file" in declared:
                values["params_file"] = str(resolved)
            log(f"{prefix}: running ...")
            start = time.time()
            try:
                papermill.execute_notebook(str(source), str(output), parameters=values, kernel_name=kernel_name,
                                           cwd=str(REPO_ROOT), progress_bar=False, log_output=False)
            except PapermillExecutionError as e:
                marker.unlink(missing_ok=True)
                raise PipelineError(
                    f"{prefix} failed in cell {e.exec_count} ({e.ename}: {e.evalue}).\n"
                    f"Executed notebook with the traceback: {output}\n"
                    f"Fix the cause and rerun the same command: finished notebooks are skipped.") from None
            seconds = time.time() - start
            atomic_write_json(marker, {"params_hash": digest, "seconds": round(seconds, 1),
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
            log(f"{prefix}: done in {seconds:.0f} s -> {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
            results.append(StepResult(name, "ran", seconds, output))
    return results


if __name__ == "__main__":  # pragma: no cover
    run_pipeline(sys.argv[1] if len(sys.argv) > 1 else None)
