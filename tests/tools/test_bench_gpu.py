"""Tests for benchmarks/run_gpu.py and medr1/train/step_timer.py, on CPU.

The GPU numbers themselves need a GPU; what a CPU can check is checked here: the parameter count of each
written-out architecture (against a model built on the `meta` device), the dry run of a recipe, that the
benchmark's params are the recipe's except the listed overrides, and the step timer on a real (tiny) CPU
GRPO run with gradient accumulation, where `training_step` runs twice per optimizer step.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medr1.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import acceptance  # noqa: E402
import run_gpu  # noqa: E402


@pytest.mark.parametrize("name, billions", [("llama3.1-8b", 8.030), ("qwen2.5-7b", 7.616), ("qwen2.5-1.5b", 1.544)])
def test_parameter_count_matches_the_built_architecture(name, billions):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((run_gpu.ARCH_DIR / f"{name}.json").read_text())
    values = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**values))
    built = sum(p.numel() for p in model.parameters())
    assert run_gpu.count_parameters(cfg) == built
    assert round(built / 1e9, 3) == billions  # the published sizes


def test_every_gpu_recipe_has_an_architecture():
    from medr1.config import load_params

    for recipe in ("llama3.1-8b-grpo.yaml", "qwen2.5-7b-grpo.yaml", "qwen2.5-7b-grpo-4gpu.yaml"):
        name, _ = run_gpu.architecture_for(load_params(REPO_ROOT / "params" / recipe).model)
        assert (run_gpu.ARCH_DIR / f"{name}.json").is_file()
    with pytest.raises(run_gpu.BenchmarkSetupError, match=r"no architecture file for model 'x/y'.*--architecture"):
        run_gpu.architecture_for("x/y")


def test_dry_run_prints_params_b_and_the_grpo_config():
    out = subprocess.run([sys.executable, "benchmarks/run_gpu.py", "--dry-run", "--recipe",
                          "params/llama3.1-8b-grpo.yaml"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    plan = json.loads(lines[0])
    assert plan["params_b"] == pytest.approx(8.0, abs=0.05) and plan["architecture"] == "llama3.1-8b"
    grpo = plan["grpo_config"]
    # the recipe's algorithm and shapes, as medr1 train would build them
    assert (grpo["per_device_train_batch_size"], grpo["gradient_accumulation_steps"], grpo["num_generations"]) == (8, 4, 8)
    assert (grpo["loss_type"], grpo["epsilon_high"], grpo["mask_truncated_completions"]) == ("dapo", 0.2, False)
    assert grpo["gradient_checkpointing"] is True and grpo["bf16"] is True
    assert (grpo["max_steps"], grpo["max_completion_length"], grpo["save_strategy"]) == (3, 256, "no")


def test_benchmark_params_are_the_recipe_but_the_listed_overrides():
    from medr1.config import load_params

    recipe = load_params(REPO_ROOT / "params/qwen2.5-7b-grpo.yaml")
    params, overrides = run_gpu.bench_params("params/qwen2.5-7b-grpo.yaml", model_dir="/m", backend="unsloth",
                                             steps=3, tokens="recipe", vllm="recipe")
    differ = {k for k, v in params.to_dict().items() if getattr(recipe, k) != v}
    assert differ - {"model"} == set(overrides)
    assert "max_completion_length" not in overrides and params.use_vllm == recipe.use_vllm
    for key in ("lora_r", "lora_target_modules", "per_device_train_batch_size", "gradient_accumulation_steps",
                "num_generations", "loss_type", "beta", "gradient_checkpointing", "learning_rate"):
        assert key not in overrides


# --------------------------------------------------------------------------------------------------
# The step timer on a real CPU run
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_step_timer_times_whole_optimizer_steps(tmp_path, tiny_checkpoint):
    from datasets import Dataset

    from medr1.config import Params
    from medr1.models.load import load_policy
    from medr1.train.step_timer import StepTimer
    from medr1.train.trainer import build_grpo_config, build_trainer

    params = Params(device="cpu", backend="trl", num_generations=2, per_device_train_batch_size=2,
                    gradient_accumulation_steps=2, max_completion_length=4, max_steps=3, lora_r=2, lora_alpha=4,
                    lora_target_modules=["q_proj", "v_proj"], seed=0)
    model, tok, peft_config, dtype = load_policy(params, tiny_checkpoint, device="cpu", backend="trl")
    config = build_grpo_config(params, tmp_path, cuda=False, dtype_name=dtype, save_strategy="no", report_to=[])
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"q{i}"}]} for i in range(8)])
    timer = StepTimer()
    trainer = build_trainer(params, model=model, tokenizer=tok, peft_config=peft_config, config=config,
                            reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]],
                            train_dataset=data, callbacks=[timer])
    micro_batches = []
    original = trainer.training_step
    trainer.training_step = lambda *a, **k: (micro_batches.append(1), original(*a, **k))[1]
    assert timer.wrap_generation(trainer) == "_generate_single_turn"
    trainer.train()

    assert len(micro_batches) == 6  # what the old wrapper timed: two per step
    assert [s["step"] for s in timer.steps] == [1, 2, 3]  # one timing per optimizer step
    for s in timer.steps:
        assert s["generation_calls"] == 1  # one generation batch per step (steps_per_generation = accumulation)
        assert 0 < s["generation_s"] < s["seconds"]
    summary = timer.summary(warmup=1)
    assert summary["measured_steps"] == 2 and 0 < summary["generation_share"] < 1
    assert summary["median_step_s"] > summary["median_generation_s"] > 0


def test_step_timer_synchronises_at_each_boundary():
    from types import SimpleNamespace

    from medr1.train.step_timer import StepTimer

    events, now = [], iter(range(100))
    timer = StepTimer(synchronize=lambda: events.append("sync"), clock=lambda: float(next(now)))

    class Trainer:
        def _generate_single_turn(self):
            events.append("gen")

    trainer = Trainer()
    timer.wrap_generation(trainer)
    state = SimpleNamespace(global_step=0)
    timer.on_step_begin(None, state, None)
    timer.on_step_begin(None, state, None)  # a second micro-batch: the step stays open
    trainer._generate_single_turn()
    state.global_step = 1
    timer.on_step_end(None, state, None)
    assert events == ["sync", "sync", "gen", "sync", "sync"]
    assert timer.steps == [{"step": 1, "seconds": 3.0, "generation_s": 1.0, "generation_calls": 1}]


def test_no_gpu_exits_with_a_message(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU refusal")
    assert run_gpu.main(["--recipe", "params/qwen2.5-7b-grpo.yaml"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The device acceptance run (benchmarks/acceptance.py): its CPU rehearsal and its checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_acceptance_dry_run_rehearses_every_section_on_cpu(tmp_path):
    """`run_gpu.py --acceptance --dry-run`: the TRL child trains two steps on a tiny model of the 7B recipe's
    family, the log-probability probe sees the policy move after one step, static and HF generation are
    timed and agree; the GPU-only sections say why they were skipped; one JSON."""
    out = tmp_path / "acceptance.json"
    p = subprocess.run([sys.executable, "benchmarks/run_gpu.py", "--acceptance", "--dry-run", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["acceptance"] is True and result["recipe"] == "params/qwen2.5-7b-grpo.yaml"
    assert result["architecture"] == "qwen2.5-7b" and result["device"].startswith("cpu")
    trl = result["backends"]["trl"]
    assert "error" not in trl, trl
    assert [s["step"] for s in trl["steps"]] == [1, 2] and trl["warmup_steps"] == 1 and trl["measured_steps"] == 1
    assert trl["grpo_config_differences"] == {}
    assert {"learning_rate", "warmup_ratio", "reward_funcs", "max_completion_length"} <= set(trl["overrides"])
    probe = trl["logprob_probe"]
    assert [r["step"] for r in probe["records"]] == [0, 1]  # before any update, after one optimizer step
    assert probe["engine_changed"] is True and probe["stale_weights"] is False
    assert "CUDA" in result["backends"]["unsloth"]["skipped"] and "CUDA" in result["vllm"]
    gen = result["generation"]
    assert gen["hf_s"] > 0 and gen["static_s"] > 0 and gen["static_same_texts_as_hf"] is True
    assert result["checks"]["passed"] is True and result["within_budget"] is True


def test_acceptance_flags_an_engine_that_kept_stale_weights():
    """The verdict: the policy moved, the engine's number did not -> stale weights, and the run fails."""
    probe = object.__new__(acceptance.LogprobProbe)
    probe.engine = "vllm"
    probe.records = [{"step": 0, "engine": -50.0, "policy": -50.01}, {"step": 1, "engine": -50.0, "policy": -49.2}]
    verdict = probe.verdict()
    assert verdict["stale_weights"] is True and verdict["engine_changed"] is False
    result = {"backends": {"trl": {"steps": [{}, {}], "logprob_probe": verdict},
                           "unsloth": {"skipped": "Unsloth imports only with CUDA"}},
              "generation": {"static_same_texts_as_hf": True, "static_s": 1.0, "hf_s": 2.0}}
    checks = acceptance.checks(result, cuda=True)
    assert checks["trl_engine_not_stale"] is False and checks["passed"] is False
    probe.records = [{"step": 0, "error": "RuntimeError: engine asleep"}]
    assert probe.verdict()["engine_changed"] is None  # undecided, and `checks` does not count it as passed


def test_acceptance_engine_logprob_calls_fit_vllm(monkeypatch):
    """The probe's vLLM calls (SamplingParams with prompt_logprobs, generate with lora_request) checked
    against the pinned vLLM's signatures; the completion's log-probability is summed from prompt_logprobs."""
    import types

    from api_contract import fake_vllm

    class Engine:
        def generate(self, prompts, sampling_params=None, **kwargs):
            ids = prompts[0]["prompt_token_ids"]
            rows = [None] + [{t: types.SimpleNamespace(logprob=-0.5)} for t in ids[1:]]
            return [types.SimpleNamespace(prompt_logprobs=rows)]

    modules = fake_vllm(lambda *a, **k: Engine())
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    llm = modules["vllm"].LLM(model="m")
    lora = modules["vllm.lora.request"].LoRARequest("adapter", 1, "/a")
    assert acceptance.engine_logprob(llm, [1, 2, 3], [7, 8], lora_request=lora) == pytest.approx(-1.0)


def test_acceptance_sections_keep_time_for_the_later_ones():
    import time

    deadline = time.time() + acceptance.BUDGET_S
    left = {s: acceptance.time_left_for(s, deadline) for s in acceptance.SECTION_S}
    assert abs(left["trl"] - (acceptance.BUDGET_S - 180 - 90)) <= 1
    assert abs(left["unsloth"] - (acceptance.BUDGET_S - 90)) <= 1 and abs(left["generation"] - acceptance.BUDGET_S) <= 1
