"""No stale result under new settings (issue 25, item 1): a run directory holding a training or predictions
made under other settings is never reported under the new ones.

- `medr1 train` over a training started with another learning rate stops, naming the key (finished or not);
  the same settings still find "nothing to do"; a run from before train/settings.json is judged from its
  manifest.
- `medr1 pipeline` refuses before any notebook runs (tripwires: no notebook, no weights).
- Evaluation keys its resume on the adapter's bytes: an adapter retrained at the same path is refused,
  naming adapter_sha256, and a forced rerun records the new adapter's sha256.

All fast: run directories are built by hand, generators are fakes; nothing loads a model.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from medr1.cli import main
from medr1.config import Params, load_params
from medr1.evaluation.evaluate import EvalSettingsError
from medr1.evaluation.run import evaluate_params
from medr1.generation.hf import Generation
from medr1.paths import REPO_ROOT
from medr1.pipeline import PipelineError, run_pipeline
from medr1.runs import TRAIN_SETTINGS_FILE as SETTINGS_FILE
from medr1.runs import RunDir, atomic_write_json
from medr1.train import TrainSetupError, train
from medr1.train.checkpoints import COMPLETE_FILE
from medr1.training_settings import changed_training_settings, training_settings

TOYQA = REPO_ROOT / "tests" / "fixtures" / "toyqa"


class FakeGenerator:
    """Answers "<answer>A</answer>" to every prompt, in one batch; `calls` counts the prompts it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, *, num_samples, on_batch, **_):
        self.calls.append(len(prompts))
        gens = [Generation(i, ["<answer>A</answer>"] * num_samples, 5, [3] * num_samples, ["stop"] * num_samples, 0.0)
                for i in range(len(prompts))]
        on_batch(gens)
        return gens


def finished_run(params: Params, *, settings_file: bool = True, weights: bytes = b"adapter v1") -> RunDir:
    """A run directory as a finished training of `params` leaves it (adapter, complete.json, settings)."""
    run = RunDir(params.run_dir)
    run.adapter_dir.mkdir(parents=True)
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(weights)
    atomic_write_json(run.train_dir / COMPLETE_FILE, {"global_step": params.max_steps, "max_steps": params.max_steps,
                                                      "num_train_epochs": params.num_train_epochs})
    if settings_file:
        atomic_write_json(run.train_dir / SETTINGS_FILE, training_settings(params))
    else:  # a run from before train/settings.json: the manifest's train job holds its params
        atomic_write_json(run.manifest_path, {"jobs": {"train": {"params": params.to_dict()}}})
    return run


@pytest.fixture
def params(tmp_path):
    return load_params(REPO_ROOT / "params" / "smoke.yaml", {"runs_dir": str(tmp_path / "runs"),
                                                             "data_dir": str(TOYQA), "device": "cpu"})


def test_training_settings_are_what_shapes_the_model(params):
    settings = training_settings(params)
    assert {"learning_rate", "reward_funcs", "reward_weights", "model", "seed", "lora_r", "train_sources",
            "max_completion_length"} <= set(settings)
    # where the run lives, how it is resumed or checkpointed, and evaluation do not shape the adapter
    assert not {"run_name", "runs_dir", "resume", "force", "max_steps", "save_steps"} & set(settings)
    assert not [k for k in settings if k.startswith("eval_")]


@pytest.mark.parametrize("settings_file", [True, False])
def test_train_over_a_finished_run_with_another_learning_rate_stops_naming_the_key(params, settings_file, tripwires):
    run = finished_run(params, settings_file=settings_file)
    again = train(params, progress=False)  # same settings: nothing to do, and no model was loaded (tripwires)
    assert again.skipped and again.steps == params.max_steps
    changed = params.replace(learning_rate=params.learning_rate * 2, reward_weights=[1.0, 2.0])
    assert set(changed_training_settings(run, changed)) == {"learning_rate", "reward_weights"}
    with pytest.raises(TrainSetupError, match=r"learning_rate: 0\.0001 then, 0\.0002 now; reward_weights") as err:
        train(changed, progress=False)
    assert "force: true" in str(err.value)
    # eval_* params and resume-only params are not training settings
    assert train(params.replace(eval_limit=3, save_steps=1, max_steps=1), progress=False).skipped


def test_an_interrupted_run_is_not_resumed_under_other_settings(params, tripwires):
    run = RunDir(params.run_dir)
    (run.train_dir / "checkpoint-1").mkdir(parents=True)
    atomic_write_json(run.train_dir / SETTINGS_FILE, training_settings(params))
    with pytest.raises(TrainSetupError, match="learning_rate"):
        train(params.replace(learning_rate=1e-3), progress=False)


def test_medr1_train_cli_names_the_changed_key(params, tmp_path, tripwires, error_line):
    finished_run(params)
    argv = ["train", "-f", str(REPO_ROOT / "params" / "smoke.yaml"), "--set", f"runs_dir={tmp_path / 'runs'}",
            "--set", f"data_dir={TOYQA}", "--set", "device=cpu", "--set", "learning_rate=0.002"]
    assert main(argv) != 0
    assert "learning_rate: 0.0001 then, 0.002 now" in error_line("train")


def test_pipeline_refuses_before_any_notebook_when_training_settings_changed(params, tmp_path, tripwires):
    finished_run(params)
    overrides = {"runs_dir": str(tmp_path / "runs"), "data_dir": str(TOYQA), "device": "cpu"}
    with pytest.raises(PipelineError, match=r"learning_rate: 0\.0001 then, 0\.001 now.*--force"):
        run_pipeline("params/smoke.yaml", {**overrides, "learning_rate": 0.001}, log=lambda _: None)
    # Unchanged training settings pass the check and reach the first notebook (the tripwire stops it there).
    with pytest.raises(AssertionError, match="work started"):
        run_pipeline("params/smoke.yaml", {**overrides, "eval_limit": 3}, log=lambda _: None)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_retrained_adapter_is_evaluated_afresh_and_its_sha256_recorded(params):
    params = params.replace(eval_models=["trained"], eval_limit=3)
    run = finished_run(params, weights=b"adapter v1")
    settings_path = run.eval_dir / "trained" / "settings.json"
    evaluate_params(params, progress=False, generate_fn=FakeGenerator())
    recorded = json.loads(settings_path.read_text())
    assert recorded["adapter_sha256"] == {"adapter_model.safetensors": _sha(b"adapter v1")}
    assert recorded["base_model"]["spec"] == params.model and len(recorded["base_model"]["sha256"]) == 64

    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"adapter v2")  # retrained at the same path
    gen = FakeGenerator()
    with pytest.raises(EvalSettingsError, match="adapter_sha256"):
        evaluate_params(params, progress=False, generate_fn=gen)
    assert gen.calls == []  # nothing generated into the old file
    evaluate_params(params.replace(force=True), progress=False, generate_fn=gen)
    assert json.loads(settings_path.read_text())["adapter_sha256"] == {"adapter_model.safetensors": _sha(b"adapter v2")}
    assert sum(gen.calls) == len((run.eval_dir / "trained" / "predictions.jsonl").read_text().splitlines())


def test_retraining_through_train_and_eval_never_reports_the_old_model(params, tripwires):
    """`medr1 train` + `medr1 eval` with a changed learning rate: train stops naming the key; retrained
    (force), the adapter's new bytes make evaluation stop naming adapter_sha256 until forced."""
    params = params.replace(eval_models=["trained"], eval_limit=3)
    run = finished_run(params, weights=b"adapter v1")
    evaluate_params(params, progress=False, generate_fn=FakeGenerator())
    new = params.replace(learning_rate=0.001)
    with pytest.raises(TrainSetupError, match="learning_rate"):
        train(new, progress=False)
    # What `train(new.replace(force=True))` leaves: the new settings and a new adapter at the same path.
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"adapter v2")
    atomic_write_json(run.train_dir / SETTINGS_FILE, training_settings(new))
    assert train(new, progress=False).skipped  # the retrained run is this training now
    with pytest.raises(EvalSettingsError, match="adapter_sha256"):
        evaluate_params(new, progress=False, generate_fn=FakeGenerator())
