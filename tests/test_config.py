"""Params: loading, overrides and validation that fails fast, naming the key."""

import dataclasses

import pytest
import yaml

from medr1.config import Params, ParamsError, load_params, params_from_namespace, parse_override
from medr1.paths import PARAMS_DIR

BAD_OVERRIDES = [
    # (overrides, words the message must contain)
    (["lora_rr=4"], ["unknown param", "'lora_rr'", "did you mean 'lora_r'"]),  # typo gets a suggestion
    (["lora_r=0"], ["'lora_r'", "> 0"]),  # LoRA rank 0 adapts nothing
    (["lora_r=abc"], ["'lora_r'", "integer", "'abc'"]),  # wrong type
    (["num_generations=3"], ["'num_generations'", "divide", "8"]),  # 3 does not divide the batch of 8
    (["num_generations=1"], ["'num_generations'", ">= 2"]),  # a group of one has no spread
    (["max_completion_length=-5"], ["'max_completion_length'", "> 0"]),  # negative length
    (["backend=tensorflow"], ["'backend'", "auto", "trl", "unsloth"]),  # lists allowed values
    (["run_name=../../etc"], ["'run_name'", "plain directory name"]),  # cannot escape runs_dir
    (["reward_weights=[1.0]"], ["'reward_weights'", "one weight per reward"]),  # 2 rewards, 1 weight
    (["learning_rate=.nan"], ["'learning_rate'", "finite"]),  # NaN learning rate
    (["device=cpu", "backend=unsloth"], ["'backend'", "CUDA"]),  # unsloth needs a GPU
    (["device=cpu", "use_vllm=true"], ["'use_vllm'", "CUDA"]),  # vLLM needs a GPU
    (["eval_num_samples=4"], ["'eval_num_samples'", "temperature"]),  # greedy samples are identical
    (["reward_control=shuffled"], ["'reward_control'", "none", "random"]),  # only the two controls
    (["reward_control=random", "reward_funcs=[format]"], ["'reward_control'", "accuracy"]),  # nothing reads gold
    (["prefilter_samples=1"], ["'prefilter_samples'", ">= 2"]),  # one sample has pass rate 0 or 1
    (["compare_run=demo"], ["'compare_run'", "another run"]),  # the other arm is not this run
    (["resume=maybe"], ["'resume'", "true/false"]),  # not a boolean
    (["deepspeed=zero3"], ["'deepspeed'", "multi-GPU"]),  # ZeRO on one process
    (["eval_permutations=0"], ["'eval_permutations'", "> 0"]),  # at least the order as given
    (["validation_size=-1"], ["'validation_size'", ">= 0"]),
    (["shuffle_options=sometimes"], ["'shuffle_options'", "true/false"]),
    (["optim=adam"], ["'optim'", "adamw_torch_fused", "adamw_8bit"]),
    (["vllm_importance_sampling_mode=token"], ["'vllm_importance_sampling_mode'", "sequence_mask"]),
    (["vllm_importance_sampling_clip_max=0"], ["'vllm_importance_sampling_clip_max'", "> 0"]),
    # the main process would validate alone while each ZeRO-3 forward needs every process (review B10)
    (["num_processes=2", "per_device_train_batch_size=4", "deepspeed=zero3", "validation_size=4",
      "validation_every=2"], ["'validation_every'", "ZeRO-3", "validation_every: 0"]),
    (["train_option_counts=[1, 4]"], ["'train_option_counts'", "between 2 and 26"]),  # a question needs two options
]


@pytest.mark.parametrize(("overrides", "words"), BAD_OVERRIDES)
def test_bad_params_fail_naming_the_key(overrides, words):
    with pytest.raises(ParamsError) as err:
        load_params(None, overrides)
    for word in words:
        assert word in str(err.value)


def test_overrides_are_parsed_as_yaml():
    p = load_params(None, ["lora_r=16", "reward_funcs=[accuracy, format]", "train_limit=null", "beta=0.04"])
    assert (p.lora_r, p.reward_funcs, p.train_limit, p.beta) == (16, ["accuracy", "format"], None, 0.04)


def test_int_given_for_float_is_accepted():
    assert load_params(None, ["learning_rate=1"]).learning_rate == 1.0


def test_override_without_equals_sign():
    with pytest.raises(ParamsError, match="key=value"):
        parse_override("lora_r")


def test_yaml_round_trip():
    p = load_params(None, ["lora_r=4", "eval_benchmarks=[medqa, mmlu-pro]"])
    assert Params.from_dict(yaml.safe_load(p.to_yaml())) == p


@pytest.mark.parametrize("path", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_file_is_valid(path):
    if path.name.startswith("reference_results"):
        pytest.skip("published numbers, not run params")
    params = load_params(path)
    assert params.run_name


RECIPES = sorted(p for p in PARAMS_DIR.glob("*.yaml") if not p.name.startswith("reference_results"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_list_only_what_differs_from_the_defaults(path):
    # A recipe is a diff over `Params` (the one place a default lives), or with `extends` over the recipe it
    # names: every key is a real param, and a key set to the value it would have anyway would hide which
    # values the recipe chose (run_name is always named).
    values = yaml.safe_load(path.read_text())
    base = values.pop("extends", None)
    defaults = Params().to_dict() if base is None else load_params(path.parent / base).to_dict()
    assert set(values) <= {f.name for f in dataclasses.fields(Params)}
    assert [k for k, v in values.items() if k != "run_name" and v == defaults[k]] == []


def test_extends_reads_the_base_file_first(tmp_path):
    (tmp_path / "base.yaml").write_text("run_name: base\nlora_r: 4\nseed: 7\n")
    (tmp_path / "arm.yaml").write_text("extends: base.yaml\nrun_name: arm\nlora_r: 2\n")
    p = load_params(tmp_path / "arm.yaml")
    assert (p.run_name, p.lora_r, p.seed) == ("arm", 2, 7)  # the arm's value wins, the rest is the base's
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ParamsError, match="circle"):
        load_params(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ParamsError, match="nowhere.yaml.*does not exist"):
        load_params(tmp_path / "c.yaml")


def test_smoke_resolves_with_the_random_reward_control():
    assert load_params(PARAMS_DIR / "smoke.yaml", ["reward_control=random"]).reward_control == "random"


VLLM_RECIPES = [p for p in RECIPES if yaml.safe_load(p.read_text()).get("use_vllm")]


@pytest.mark.parametrize("path", VLLM_RECIPES, ids=lambda p: p.name)
def test_vllm_recipe_memory_headers_agree_with_the_reserved_share(path):
    """vLLM reserves `vllm_gpu_memory_utilization` of the GPU up front, whatever the model needs; a header
    that estimates memory must start from that share (review B9: headers promised less than the reserve)."""
    import re

    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    share = yaml.safe_load(path.read_text())["vllm_gpu_memory_utilization"]
    found = re.findall(r"vllm_gpu_memory_utilization ([0-9.]+) x 80 GB = ([0-9]+) GiB", header)
    assert found, f"{path.name}: the header does not state what vLLM reserves"
    assert all(float(s) == share and int(g) == round(share * 80) for s, g in found)
    # Every total the header estimates (a range "~lo-hi GiB") starts above the reserve: training comes on top.
    totals = [int(lo) for lo, _ in re.findall(r"~([0-9]+)-([0-9]+) GiB", header)]
    assert totals and all(lo > share * 80 for lo in totals)


TEMPLATE_REWARD_CASES = [
    # (overrides, words the message must contain)
    (["prompt_template=leter"], ["'prompt_template'", "did you mean 'letter'"]),  # typo, before any model loads
    (["eval_prompt_template=nope"], ["'eval_prompt_template'", "r1"]),  # lists the templates
    (["reward_funcs=[accuracy, acuracy]"], ["'reward_funcs'", "unknown reward"]),  # not registered
    (["reward_funcs=[accuracy, accuracy]"], ["'reward_funcs'", "repeats"]),  # TRL logs rewards by name
    (["prompt_template=letter"], ["'reward_funcs'", "'format'", "tags"]),  # format reward, statement template
]


@pytest.mark.parametrize(("overrides", "words"), TEMPLATE_REWARD_CASES)
def test_template_and_rewards_are_checked_when_params_load(overrides, words):
    with pytest.raises(ParamsError) as err:
        load_params(None, overrides)
    for word in words:
        assert word in str(err.value)


def test_params_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_r: [unclosed\n")
    with pytest.raises(ParamsError, match="bad.yaml.*not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="must be a mapping"):
        load_params(bad)
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text("lora_r: 4\nlearning_rat: 0.1\n")
    with pytest.raises(ParamsError, match=r"bad.yaml: unknown param.*'learning_rat'"):
        load_params(bad)


def test_notebook_namespace_overrides_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("run_name: from_file\nlora_r: 4\n")
    namespace = {"params_file": str(f), "run_name": "from_notebook", "unrelated_variable": 1}
    p = params_from_namespace(namespace)
    assert (p.run_name, p.lora_r) == ("from_notebook", 4)


def test_optimizer_and_vllm_correction_choices_are_the_libraries_own():
    """Every `optim` choice is a transformers OptimizerNames value and every correction mode one TRL's
    GRPOConfig documents (TRL 1.15 and 1.16 alike); the defaults are TRL's own."""
    import inspect

    from transformers.training_args import OptimizerNames
    from trl import GRPOConfig

    from medr1.config import OPTIMIZERS, VLLM_IS_MODES

    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    doc = inspect.getdoc(GRPOConfig)
    assert all(f'"{mode}"' in doc for mode in VLLM_IS_MODES)
    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    p = Params()
    for key in ("optim", "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                "vllm_importance_sampling_clip_max"):
        assert getattr(p, key) == defaults[key], key
