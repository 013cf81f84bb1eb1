"""Prompt prefill into a KV cache: the parts of generation that build a decode batch's cache.

- Rows of a batch come sorted by length (longest first); `prefill_grouped` prefills groups of
  `PREFILL_ROWS` neighbours, each at its own width, and left-pads their caches (masked zeros) into one
  decode batch. Prefill is compute-bound on CPU (batching does not make it cheaper per token), so a batch
  prefilled in one pass paid for padding up to its longest prompt: 2x the real tokens on 32 MedQA prompts
  (benchmarks/run_cpu.py measures it).
- `merge_left_padded` is that padding and concatenation, shared with `medr1.generation.prefix_sharing` (which
  prefills a group's common beginning once).
- Only plain per-layer caches can be padded and concatenated (`plain_layers`, `plain_cache`); models with
  sliding-window layers take the single pass.

torch and transformers are imported inside the functions, as in `medr1.generation`.
"""

from __future__ import annotations

# Prompts prefilled together inside a decode batch (see `prefill_grouped`).
PREFILL_ROWS = 4


def cache_kwarg(model) -> str:
    """transformers >= 5.2x renamed the forward argument `past_key_values` to `cache`; the GPU extra pins an
    older transformers, so ask the (PEFT-unwrapped) model which name it takes."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def plain_layers(cache) -> bool:
    """Whether `cache` is plain per-layer tensors (no sliding windows): what `merge_left_padded` can pad
    and concatenate."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def plain_cache(model) -> bool:
    """Whether the model's KV cache is plain (`plain_layers`), asked before any prefill."""
    from transformers import DynamicCache

    return plain_layers(DynamicCache(config=model.config))


def merge_left_padded(parts, width: int, into) -> None:
    """Fill the empty cache `into` with the caches `parts` (batch pieces, in order), each left-padded with
    zeros to `width` positions (callers mask those positions): the grouped and the shared prefills build
    a decode batch from caches of different lengths this way."""
    import torch
    from torch.nn.functional import pad

    for i in range(len(into.layers)):
        keys = [pad(p.layers[i].keys, (0, 0, width - p.layers[i].keys.shape[-2], 0)) for p in parts]
        values = [pad(p.layers[i].values, (0, 0, width - p.layers[i].values.shape[-2], 0)) for p in parts]
        into.update(torch.cat(keys), torch.cat(values), i)


def prefill_grouped(model, input_ids, attention_mask, position_ids, cache, cache_kw):
    """The prompt pass: fills `cache`, returns the last position's logits per row.

    Rows come sorted by length (longest first), so groups of PREFILL_ROWS neighbours are prefilled each
    at its own width and their caches are left-padded (with masked zeros) into one decode batch. In one
    pass, every row would pay for the longest prompt of the batch: on MedQA a batch of 32 computed
    twice its real prompt tokens, and prefill is most of an evaluation's time on CPU. Models with
    non-plain cache layers (sliding windows) take the single pass.
    """
    import torch
    from transformers import DynamicCache

    n, width = input_ids.shape
    # logits_to_keep=1: the prompt's other positions need no logits (a (batch, length, vocab) tensor).
    if n <= PREFILL_ROWS or not plain_layers(cache):
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits[:, -1, :]
    logits, parts = [], []
    for s in range(0, n, PREFILL_ROWS):
        rows = slice(s, s + PREFILL_ROWS)
        w = int(attention_mask[rows].sum(-1).max())  # left padding: the last w columns hold every token
        sub = DynamicCache(config=model.config)
        logits.append(model(input_ids=input_ids[rows, width - w:], attention_mask=attention_mask[rows, width - w:],
                            position_ids=position_ids[rows, width - w:], use_cache=True, logits_to_keep=1,
                            **{cache_kw: sub}).logits[:, -1, :])
        parts.append(sub)
    merge_left_padded(parts, width, cache)
    return torch.cat(logits)
