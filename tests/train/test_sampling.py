"""medr1.train.sampling: GRPO's sampling step with one prefill per prompt group, and when it steps aside."""

from types import SimpleNamespace

import pytest
import torch

from medr1.generation.hf import sample_token_ids
from medr1.train.sampling import _groups, shared_prefill_applies, use_shared_prefill


@pytest.mark.parametrize("rows, expected", [
    ([[1, 2], [1, 2], [3], [3]], 2),  # two groups of two
    ([[1, 2]] * 4, 4),  # one group
    ([[1], [2], [3]], 1),  # every prompt once
    ([[1], [1], [2]], None),  # uneven groups: TRL's own path
    ([], None),
])
def test_groups(rows, expected):
    assert _groups(rows) == expected


def _fake_trainer(model, **overrides):
    """The attributes of a TRL 1.16 GRPOTrainer the hook reads; `_generate_single_turn` records fallbacks."""
    calls = []
    trainer = SimpleNamespace(
        args=SimpleNamespace(use_transformers_paged=False, gradient_checkpointing=False),
        generation_config=SimpleNamespace(temperature=1.0, top_p=1.0, top_k=None, min_p=None, repetition_penalty=1.0),
        accelerator=SimpleNamespace(device=torch.device("cpu"), num_processes=1, unwrap_model=lambda m: m),
        use_vllm=False, model=model, eos_token_ids=[2], max_completion_length=5,
        _tokenizer=SimpleNamespace(pad_token_id=0),
        _generate_single_turn=lambda *a: calls.append(a) or ("trl", None),
    )
    for key, value in overrides.items():
        setattr(trainer, key, value)
    return trainer, calls


def test_hook_samples_groups_and_steps_aside(tiny):
    trainer, calls = _fake_trainer(tiny)
    assert use_shared_prefill(trainer)
    prompts = [[1, 5, 6, 7]] * 3 + [[1, 9]] * 3
    torch.manual_seed(0)
    ids, logprobs = trainer._generate_single_turn(prompts, None, {}, 3)
    assert logprobs is None and len(ids) == 6 and all(1 <= len(x) <= 5 for x in ids) and not calls
    # the same global seed gives the same samples (TRL seeds and checkpoints the global RNG)
    torch.manual_seed(0)
    assert trainer._generate_single_turn(prompts, None, {}, 3)[0] == ids
    # images, multimodal fields or rows that are not groups go to TRL's own method
    assert trainer._generate_single_turn(prompts, [object()] * 6, {}, 3) == ("trl", None)
    assert trainer._generate_single_turn(prompts[:4], None, {}, 3) == ("trl", None)
    assert len(calls) == 2


@pytest.mark.parametrize("overrides, reason", [
    ({"use_vllm": True}, "vLLM"),
    ({"generation_config": SimpleNamespace(temperature=1.0, top_p=1.0, top_k=50, min_p=None,
                                           repetition_penalty=1.0)}, "top-k"),
    ({"generation_config": SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0, min_p=None,
                                           repetition_penalty=1.2)}, "repetition"),
    ({"args": SimpleNamespace(use_transformers_paged=False, gradient_checkpointing=True)}, "checkpointing"),
    ({"accelerator": SimpleNamespace(device=torch.device("cuda"), num_processes=1)}, "CPU"),
])
def test_hook_is_not_installed_where_it_would_differ(tiny, overrides, reason):
    trainer, _ = _fake_trainer(tiny, **overrides)
    assert reason in shared_prefill_applies(trainer)
    original = trainer._generate_single_turn
    assert not use_shared_prefill(trainer) and trainer._generate_single_turn is original


def test_greedy_group_samples_equal_hf_generate(tiny):
    # One prefill repeated for the group gives what model.generate gives each repeated row.
    prompts = [[1, 5, 6, 7, 8], [1, 9, 10]]
    ours = sample_token_ids(tiny, prompts, num_samples=2, max_new_tokens=6, temperature=0.0, top_p=1.0, eos=[2],
                            pad_id=0)
    for i, p in enumerate(prompts):
        ref = tiny.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                            max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=2)[0, len(p):].tolist()
        assert ours[2 * i] == ours[2 * i + 1] == ref[:len(ours[2 * i])]
        assert len(ours[2 * i]) == 6 or ours[2 * i][-1] == 2  # stopped only at the length cap or at EOS
