"""Tests for medr1/train/trainer.py: one algorithm whatever the backend.

Unsloth cannot be imported without a GPU, so its path runs here against a fake `unsloth` module that does
what the real one was measured doing on an H100 (issue 15): its GRPOConfig forces
`mask_truncated_completions=True` and `epsilon_high=0.28` for loss_type dapo, and its loader replaces the
pad token. The fake trainer also changes a trainer attribute after TRL's constructor copied it. The
tests check that our values are passed, set back, warned about, and that what the trainer then runs is
what params ask for, exactly as on the TRL backend.
"""

from __future__ import annotations

import logging
import sys
import types

import pytest
from helpers import small_params

from medr1.config import Params
from medr1.models.load import load_policy
from medr1.train.trainer import (
    build_grpo_config,
    build_trainer,
    check_effective_config,
    effective_grpo_config,
)

ALGORITHM = dict(loss_type="dapo", epsilon=0.2, epsilon_high=None, mask_truncated_completions=False,
                 scale_rewards="group", importance_sampling_level="token", beta=0.0)


def _params(tmp_path, **changes) -> Params:
    # no question set and the package's model: these tests build configs and trainers on a tiny checkpoint
    values = dict(run_name="g", runs_dir=str(tmp_path), device="cpu", backend="trl", num_generations=2,
                  per_device_train_batch_size=2, max_completion_length=4, max_prompt_length=64, lora_r=2,
                  lora_alpha=4, lora_target_modules=["q_proj", "v_proj"], reward_funcs=["accuracy", "format"],
                  reward_weights=[1.0, 0.5], max_steps=1, seed=0)
    return small_params(tmp_path, fixture=None, training=False, **{**values, **changes})


def _dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"question {i}"}], "answer": "A",
                               "options_json": '{"A": "x", "B": "y"}'} for i in range(4)])


def _reward(completions, **kwargs):
    return [0.0] * len(completions)


def _build(params, tiny_checkpoint, tmp_path, backend, changed=None):
    model, tok, peft_config, dtype = load_policy(params, tiny_checkpoint, device="cpu", backend=backend, changed=changed)
    config = build_grpo_config(params, tmp_path / "out", cuda=False, dtype_name=dtype, changed=changed,
                               report_to=[], save_strategy="no")
    return build_trainer(params, model=model, tokenizer=tok, peft_config=peft_config, config=config,
                         reward_funcs=[_reward, _reward], train_dataset=_dataset(), changed=changed)


# --------------------------------------------------------------------------------------------------
# GRPOConfig
# --------------------------------------------------------------------------------------------------


def test_every_algorithm_knob_reaches_the_config(tmp_path):
    params = _params(tmp_path, epsilon=0.1, epsilon_high=0.28, mask_truncated_completions=True, scale_rewards="none",
                     importance_sampling_level="sequence", num_iterations=2, loss_type="dr_grpo", beta=0.01,
                     vllm_gpu_memory_utilization=0.45)
    cfg = build_grpo_config(params, tmp_path, cuda=False)
    got = {k: getattr(cfg, k) for k in ("epsilon", "epsilon_high", "mask_truncated_completions", "scale_rewards",
                                        "importance_sampling_level", "num_iterations", "loss_type", "beta",
                                        "vllm_mode", "vllm_gpu_memory_utilization")}
    assert got == dict(epsilon=0.1, epsilon_high=0.28, mask_truncated_completions=True, scale_rewards="none",
                       importance_sampling_level="sequence", num_iterations=2, loss_type="dr_grpo", beta=0.01,
                       vllm_mode="colocate", vllm_gpu_memory_utilization=0.45)
    # epsilon_high: null means symmetric clipping, written out so no backend default fills it in
    assert build_grpo_config(_params(tmp_path, epsilon=0.15), tmp_path, cuda=False).epsilon_high == 0.15


def _unsloth_like_config():
    """GRPOConfig as Unsloth 2026.10 patches it: for dapo it overwrites two values it was given."""
    import trl

    class UnslothGRPOConfig(trl.GRPOConfig):
        def __init__(self, *args, **kwargs):
            if kwargs.get("loss_type") == "dapo":
                kwargs.update(mask_truncated_completions=True, epsilon_high=0.28)
            super().__init__(*args, **kwargs)

    return UnslothGRPOConfig


def test_a_config_changed_by_the_backend_is_set_back_and_warned(tmp_path, monkeypatch, caplog):
    import trl

    monkeypatch.setattr(trl, "GRPOConfig", _unsloth_like_config())
    changed: dict = {}
    with caplog.at_level(logging.WARNING, logger="medr1.train.trainer"):
        cfg = build_grpo_config(_params(tmp_path, **ALGORITHM), tmp_path, cuda=False, changed=changed)
    assert type(cfg).__name__ == "UnslothGRPOConfig"
    assert (cfg.mask_truncated_completions, cfg.epsilon_high) == (False, 0.2)
    assert changed == {"mask_truncated_completions": True, "epsilon_high": 0.28}
    assert "UnslothGRPOConfig changed GRPOConfig.epsilon_high from 0.2 to 0.28" in caplog.text


# --------------------------------------------------------------------------------------------------
# Built trainers: TRL, and Unsloth faked
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trl_backend_runs_what_params_ask(tmp_path, tiny_checkpoint, caplog):
    params = _params(tmp_path, epsilon=0.1, epsilon_high=0.28, mask_truncated_completions=True,
                     scale_rewards="batch", importance_sampling_level="sequence", beta=0.02, temperature=0.9)
    with caplog.at_level(logging.WARNING, logger="medr1.train.trainer"):
        trainer = _build(params, tiny_checkpoint, tmp_path, "trl")
        effective, diff = check_effective_config(params, trainer, n_rewards=2)
    assert diff == {} and "changed" not in caplog.text
    assert {k: effective[k] for k in ("epsilon", "epsilon_high", "mask_truncated_completions", "scale_rewards",
                                      "importance_sampling_level", "beta", "temperature", "loss_type",
                                      "reward_weights", "per_device_train_batch_size", "num_generations")} == dict(
        epsilon=0.1, epsilon_high=0.28, mask_truncated_completions=True, scale_rewards="batch",
        importance_sampling_level="sequence", beta=0.02, temperature=0.9, loss_type="dapo", reward_weights=[1.0, 0.5],
        per_device_train_batch_size=2, num_generations=2)
    assert effective["pad_token"] == trainer.processing_class.pad_token == effective["pad_token"]
    assert effective["generation_pad_token_id"] == trainer.processing_class.pad_token_id
    import json

    json.dumps(effective)  # goes into manifest.json as it is


def _fake_unsloth(monkeypatch, calls: dict):
    """A `unsloth` module that loads with transformers + PEFT and misbehaves like the real one; its methods
    refuse what Unsloth 2026.10.9's signatures refuse (tests/contracts/api_snapshot.json)."""
    import trl
    from api_contract import check_call
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(model_name, **kwargs):
            check_call("unsloth.FastLanguageModel.from_pretrained", kwargs={"model_name": model_name, **kwargs})
            calls["from_pretrained"] = kwargs
            model = AutoModelForCausalLM.from_pretrained(model_name)
            tok = AutoTokenizer.from_pretrained(model_name)
            tok.pad_token = tok.bos_token  # Unsloth replaced <|im_end|> by <|endoftext|> on the H100
            return model, tok

        @staticmethod
        def get_peft_model(model, **kwargs):
            check_call("unsloth.FastLanguageModel.get_peft_model", (model,), kwargs)
            calls["get_peft_model"] = kwargs
            lora = LoraConfig(r=kwargs["r"], lora_alpha=kwargs["lora_alpha"], lora_dropout=kwargs["lora_dropout"],
                              target_modules=kwargs["target_modules"], task_type="CAUSAL_LM")
            return get_peft_model(model, lora)

    class UnslothGRPOTrainer(trl.GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scale_rewards = "none"  # a change made after TRL copied the value from args

    module = types.ModuleType("unsloth")
    module.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr(trl, "GRPOConfig", _unsloth_like_config())
    monkeypatch.setattr(trl, "GRPOTrainer", UnslothGRPOTrainer)


@pytest.mark.slow
def test_unsloth_path_passes_and_keeps_the_same_algorithm(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    params = _params(tmp_path, **ALGORITHM)
    reference = effective_grpo_config(_build(params, tiny_checkpoint, tmp_path, "trl"))

    calls: dict = {}
    _fake_unsloth(monkeypatch, calls)
    changed: dict = {}
    with caplog.at_level(logging.WARNING, logger="medr1"):
        trainer = _build(params, tiny_checkpoint, tmp_path, "unsloth", changed=changed)
        effective, diff = check_effective_config(params, trainer, n_rewards=2)
    assert type(trainer).__name__ == "UnslothGRPOTrainer"
    # our values went in explicitly ...
    assert calls["from_pretrained"]["max_seq_length"] == 64 + 4
    assert calls["from_pretrained"]["max_lora_rank"] == calls["get_peft_model"]["r"] == 2
    assert calls["get_peft_model"]["target_modules"] == ["q_proj", "v_proj"]
    # ... every change the backend made was set back and named ...
    assert set(changed) == {"mask_truncated_completions", "epsilon_high", "pad_token", "scale_rewards"}
    for key in changed:
        assert key in caplog.text
    # ... so the trainer runs exactly what the TRL backend runs.
    assert diff == {}
    same = {k: v for k, v in reference.items() if k != "trainer_class"}
    assert {k: effective[k] for k in same} == same
    assert trainer.processing_class.pad_token == reference["pad_token"]
    assert trainer.generation_config.pad_token_id == reference["generation_pad_token_id"]


def test_pad_token_param_must_be_a_token(tmp_path):
    from medr1.models.base import intended_pad_token

    class Tok:
        pad_token, eos_token, unk_token_id = "<pad>", "</s>", 0

        def convert_tokens_to_ids(self, token):
            return {"<pad>": 1, "</s>": 2}.get(token, 0)

    assert intended_pad_token(_params(tmp_path), Tok()) == "<pad>"
    assert intended_pad_token(_params(tmp_path, pad_token="</s>"), Tok()) == "</s>"
    with pytest.raises(ValueError, match=r"param 'pad_token' = '<nope>' is not a token.*'</s>'"):
        intended_pad_token(_params(tmp_path, pad_token="<nope>"), Tok())
