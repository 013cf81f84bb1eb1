"""Tests for medr1.generation: batching, order, early stopping, skipping, seeding, backends.

Fast tests use a tiny randomly initialised Llama (a few thousand parameters) with a byte-level tokenizer,
so the decoding loop itself (cache, padding, dropping finished rows) is exercised in milliseconds; the
slow tests check batched against unbatched greedy decoding on the embedded SmolLM2-135M.
"""

from __future__ import annotations

import pytest
import torch
from helpers import ByteTokenizer

from medr1.generation.backends import pick_backend
from medr1.generation.hf import PROMPT_TOO_LONG, generate, length_batches
from medr1.generation.vllm import VLLM_HINT, generate_vllm

# --------------------------------------------------------------------------------------------------
# A tiny model and a byte tokenizer
# --------------------------------------------------------------------------------------------------


PROMPTS = ["hi", "a much longer prompt here", "mid length", "x", "another one of some length", "ok"]


def _texts(gens):
    return [g.text for g in gens]


def _common_token(model):
    """A token the random model emits often, used as EOS so rows finish at different steps."""
    gens = generate(model, ByteTokenizer(eos=258), PROMPTS, max_new_tokens=12, batch_size=6)
    ids = [int(t) for g in gens for t in g.text.split()]
    return max(set(ids), key=ids.count)


# --------------------------------------------------------------------------------------------------
# Fast tests
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths, batch_size, expected", [
    ([3, 9, 1, 8, 2], 2, [[1, 3], [0, 4], [2]]),   # longest first, neighbours together
    ([5, 5, 5], 2, [[0, 1], [2]]),                 # ties keep input order
    ([4], 8, [[0]]),                               # one short batch
    ([], 4, []),                                   # nothing to do
])
def test_length_batches(lengths, batch_size, expected):
    assert length_batches(lengths, batch_size) == expected


def test_batched_equals_unbatched_and_order_is_kept(tiny):
    eos = _common_token(tiny)
    tok = ByteTokenizer(eos=eos)
    one = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=1)
    for batch_size in (2, 6):
        many = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=batch_size)
        assert _texts(many) == _texts(one)
    # Results come back in input order whatever the length sort did.
    assert [g.index for g in one] == list(range(len(PROMPTS)))
    assert [g.prompt_tokens for g in one] == [len(p) + 1 for p in PROMPTS]
    # Some rows stopped early (EOS) and some hit the cap, so row dropping was exercised.
    reasons = {g.finish_reason for g in one}
    assert reasons == {"stop", "length"}
    for g in one:
        assert g.completion_tokens[0] == (10 if g.finish_reason == "length" else len(g.text.split()) + 1)


def test_compact_loop_matches_hf_generate(tiny):
    tok = ByteTokenizer(eos=_common_token(tiny))
    ours = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=3, decode="compact")
    theirs = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=3, decode="hf")
    assert _texts(ours) == _texts(theirs)
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in theirs]


def test_static_cache_matches_eager_generate(tiny):
    # The evaluation path for GPUs without vLLM: a static KV cache (which is what lets transformers compile
    # the decode step with CUDA graphs). Here without compilation (compile="auto" compiles only on CUDA):
    # the same greedy texts and stop reasons as the eager, dynamic-cache `generate`.
    tok = ByteTokenizer(eos=_common_token(tiny))
    static = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=3, decode="static")
    eager = generate(tiny, tok, PROMPTS, max_new_tokens=10, batch_size=3, decode="hf")
    assert _texts(static) == _texts(eager)
    assert [g.finish_reason for g in static] == [g.finish_reason for g in eager]


@pytest.mark.slow
def test_static_cache_compiled_matches_eager_generate(tiny):
    # The same with torch.compile forced on CPU (inductor; ~50 s of compilation on 2 cores, hence slow).
    # On CUDA the compiled step is captured as CUDA graphs; that speed is measured by run_gpu.py, not here.
    tok = ByteTokenizer(eos=_common_token(tiny))
    compiled = generate(tiny, tok, PROMPTS[:3], max_new_tokens=6, batch_size=3, decode="static", compile=True)
    eager = generate(tiny, tok, PROMPTS[:3], max_new_tokens=6, batch_size=3, decode="hf")
    assert _texts(compiled) == _texts(eager)


@pytest.mark.parametrize("compile, expected", [
    ("auto", {"cache_implementation": "static"}),  # transformers compiles on CUDA, not on CPU
    (False, {"cache_implementation": "static", "disable_compile": True}),
    (True, {"cache_implementation": "static", "compile_config": "all devices"}),
])
def test_static_decode_passes_the_compile_choice_to_generate(tiny, monkeypatch, compile, expected):
    seen = {}
    original = tiny.generate

    def spy(*args, **kwargs):
        seen.update({k: kwargs[k] for k in ("cache_implementation", "disable_compile", "compile_config") if k in kwargs})
        kwargs.pop("compile_config", None)  # no compilation in a unit test: check the plumbing only
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny, "generate", spy)
    generate(tiny, ByteTokenizer(), ["hi"], max_new_tokens=2, batch_size=1, decode="static", compile=compile)
    if "compile_config" in seen:
        assert seen["compile_config"]._compile_all_devices is True
        seen["compile_config"] = "all devices"
    assert seen == expected
    with pytest.raises(ValueError, match="compile must be"):
        generate(tiny, ByteTokenizer(), ["hi"], max_new_tokens=2, batch_size=1, decode="static", compile="yes")


def test_chat_messages_and_on_batch_streaming(tiny):
    seen = []
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]
    gens = generate(tiny, ByteTokenizer(), messages, max_new_tokens=3, batch_size=4, on_batch=seen.append)
    assert [len(b) for b in seen] == [4, 2]
    assert sorted(g.index for b in seen for g in b) == list(range(len(PROMPTS)))
    assert gens[0].prompt_tokens == len("<user>hi<assistant>")  # template applied, no extra BOS


def test_too_long_prompts_are_skipped_not_truncated(tiny):
    prompts = ["short", "y" * 200, "also short"]  # the model context is 96 tokens
    seen = []
    gens = generate(tiny, ByteTokenizer(), prompts, max_new_tokens=4, batch_size=2, on_batch=seen.append)
    assert [g.finish_reason for g in gens] == ["length", PROMPT_TOO_LONG, "length"]
    assert gens[1].text == "" and gens[1].skipped and gens[1].prompt_tokens == 201
    assert sum(len(b) for b in seen) == 3


def test_sampling_is_seeded(tiny):
    kw = {"max_new_tokens": 6, "batch_size": 4, "temperature": 1.0, "top_p": 0.9, "num_samples": 2}
    a = generate(tiny, ByteTokenizer(eos=258), PROMPTS, seed=1, **kw)
    b = generate(tiny, ByteTokenizer(eos=258), PROMPTS, seed=1, **kw)
    c = generate(tiny, ByteTokenizer(eos=258), PROMPTS, seed=2, **kw)
    assert [g.texts for g in a] == [g.texts for g in b]
    assert [g.texts for g in a] != [g.texts for g in c]
    assert all(len(g.texts) == 2 for g in a)


def test_samples_share_one_prefill_and_match_repeated_prompts(tiny):
    # The compact loop prefills a prompt once and repeats its cache for the samples: greedy samples are the
    # greedy answer, and seeded samples equal those of the same prompts repeated as separate rows.
    greedy = generate(tiny, ByteTokenizer(), PROMPTS[:2], max_new_tokens=5, batch_size=8)
    tripled = generate(tiny, ByteTokenizer(), PROMPTS[:2], max_new_tokens=5, batch_size=8, num_samples=3)
    assert [g.texts for g in tripled] == [[g.text] * 3 for g in greedy]
    kw = {"max_new_tokens": 6, "batch_size": 4, "temperature": 1.0, "seed": 3}
    shared = generate(tiny, ByteTokenizer(eos=258), ["abc", "xy"], num_samples=2, **kw)
    repeated = generate(tiny, ByteTokenizer(eos=258), ["abc", "abc", "xy", "xy"], **kw)
    assert [t for g in shared for t in g.texts] == [g.text for g in repeated]


def test_shared_prefixes_prefill_once_and_change_nothing(tiny, monkeypatch):
    # Rotations of one question share their beginning: grouped, that part is prefilled once per group,
    # and the greedy answers equal those of whole-prompt prefills.
    import medr1.generation.hf as hf  # patched where generate() looks the name up

    stem = "a long question stem that the rotations share "
    prompts = [stem + "x y z", "short", stem + "y z x", stem + "z x y", "another short one", "short!"]
    widths = []
    real = hf.prefill_groups
    monkeypatch.setattr(hf, "prefill_groups", lambda m, rows, groups, *a: widths.append(groups) or real(m, rows, groups, *a))
    whole = generate(tiny, ByteTokenizer(), prompts, max_new_tokens=6, batch_size=8, share_prefixes=False)
    assert not widths
    shared = generate(tiny, ByteTokenizer(), prompts, max_new_tokens=6, batch_size=8)
    assert _texts(shared) == _texts(whole)
    assert sorted(widths[0]) == [1, 1, 1, 3] or sorted(widths[0]) == [1, 2, 3]  # the three rotations together
    # a batch smaller than a group splits it, and answers still agree
    assert _texts(generate(tiny, ByteTokenizer(), prompts, max_new_tokens=6, batch_size=2)) == _texts(whole)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens"),            # nothing to generate
    ({"max_new_tokens": 4, "num_samples": 0}, "num_samples"),
    ({"max_new_tokens": 4, "temperature": -1}, "temperature"),
    ({"max_new_tokens": 4, "decode": "fast"}, "decode"),  # unknown loop
])
def test_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny, ByteTokenizer(), ["x"], batch_size=1, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_vllm_without_gpu_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"vLLM needs a CUDA GPU and `pip install -e \.\[gpu\]`"):
        generate_vllm("embedded:smollm2-135m", ["hi"], max_new_tokens=4)
    with pytest.raises(RuntimeError, match="CUDA"):
        pick_backend("vllm")
    assert pick_backend("auto") == "hf"
    assert VLLM_HINT.startswith("vLLM needs a CUDA GPU")


# --------------------------------------------------------------------------------------------------
# Slow: the embedded model
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    from medr1.models.load import load_model

    return load_model("embedded:smollm2-135m", device="cpu", torch_dtype="float32")


SMOL_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Which organ produces insulin? Answer with one word."}],
    [{"role": "system", "content": "You are a careful medical assistant."},
     {"role": "user", "content": "A 45-year-old man has crushing chest pain radiating to the left arm and "
                                 "sweating. What is the most likely diagnosis?\nA. Myocardial infarction\n"
                                 "B. Gastritis\nC. Pneumonia\nD. Migraine"}],
    [{"role": "user", "content": "Hi"}],
]


@pytest.mark.slow
def test_embedded_option_rotations_share_their_prefill(smol):
    from medr1.data import Question
    from medr1.data.option_order import cyclic_shift
    from medr1.task.prompts import build_messages

    model, tok = smol
    q = Question("q", "A 45-year-old man has crushing chest pain radiating to the left arm and sweating. What is "
                 "the most likely diagnosis?", {"A": "Myocardial infarction", "B": "Gastritis", "C": "Pneumonia",
                                                 "D": "Migraine"}, "A", "toy")
    prompts = [build_messages(cyclic_shift(q, k), "letter") for k in range(4)] + SMOL_PROMPTS
    whole = generate(model, tok, prompts, max_new_tokens=12, batch_size=8, share_prefixes=False)
    shared = generate(model, tok, prompts, max_new_tokens=12, batch_size=8)
    assert _texts(shared) == _texts(whole)


@pytest.mark.slow
def test_embedded_batched_matches_unbatched(smol):
    model, tok = smol
    one = generate(model, tok, SMOL_PROMPTS, max_new_tokens=16, batch_size=1)
    many = generate(model, tok, SMOL_PROMPTS, max_new_tokens=16, batch_size=4)
    hf = generate(model, tok, SMOL_PROMPTS, max_new_tokens=16, batch_size=4, decode="hf")
    # fp32 on CPU: padding changes matmul shapes, not results beyond rounding; greedy texts agree.
    assert _texts(many) == _texts(one) == _texts(hf)
    assert [g.prompt_tokens for g in many] == [g.prompt_tokens for g in one]
    assert all(g.text.strip() for g in many)
