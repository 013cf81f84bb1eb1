"""Shared fixtures: a tiny random Llama with a byte tokenizer (generation and benchmark instruments, in
milliseconds), and tripwires for entry points that must refuse before any work starts."""

import pytest
import torch


class ByteTokenizer:
    """Bytes + 3 as ids; 0 pad, 1 bos, `eos` configurable. Enough of the HF tokenizer API for generate()."""

    pad_token_id = 0

    def __init__(self, eos=2):
        self.eos_token_id = eos

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [b + 3 for b in text.encode()]}

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i in (0, 1, self.eos_token_id)))


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


def run_eval(model, benchmarks, out, **kw):
    """`evaluate_model` with settings given as keywords: the package defaults (`Params`), seed 0, and `kw`
    (EvalSettings fields; adapter, progress, generate_fn and question_sets go to the call itself)."""
    from medr1.evaluation.evaluate import EvalSettings, evaluate_model

    runtime = {k: kw.pop(k) for k in ("adapter", "progress", "generate_fn", "question_sets") if k in kw}
    return evaluate_model(model, benchmarks, out, EvalSettings.from_params(None, **{"seed": 0, **kw}), **runtime)
