"""Shared fixtures: a tiny random Llama with a byte tokenizer (generation and benchmark instruments, in
milliseconds), and tripwires for entry points that must refuse before any work starts."""

import pytest
import torch


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised 2-layer Llama over the byte vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # the tokenizer's EOS is the one under test
    model.generation_config.pad_token_id = 0
    # One thread: a model this small gains nothing from more, and they spin when the test machine is busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model
    torch.set_num_threads(threads)


@pytest.fixture
def tripwires(monkeypatch):
    """Anything that would load weights, convert the embedded model or run a notebook fails the test."""
    import papermill
    import transformers

    import medr1.generation.backends
    import medr1.models.load
    import medr1.models.vision

    def tripped(*args, **kwargs):
        raise AssertionError("work started before the entry point refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", tripped)
    # patched where it is looked up: each loader imported the name from models.base
    monkeypatch.setattr(medr1.models.load, "embedded_checkpoint", tripped)
    monkeypatch.setattr(medr1.models.vision, "embedded_checkpoint", tripped)
    monkeypatch.setattr(medr1.generation.backends, "hf_generate_fn", tripped)
    monkeypatch.setattr(papermill, "execute_notebook", tripped)


@pytest.fixture
def error_line(capsys):
    """The one `medr1 <command>: error: ...` line a refused CLI call printed (exactly one, no traceback)."""

    def read(command: str) -> str:
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith(f"medr1 {command}: error:")]
        assert len(lines) == 1, lines
        return lines[0]

    return read


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Directory of a random 2-layer Llama with the embedded model's tokenizer (a real HF tokenizer, as TRL
    needs): trainers build in a second and a GRPO step takes well under one on CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medr1.models.base import load_tokenizer
    from medr1.models.load import resolve_model_path

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
