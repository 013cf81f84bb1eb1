"""Prompts that share a long beginning are prefilled once: the rotations of one evaluation question.

Why: with `eval_permutations` K, a question is asked K times with its options rotated, and the K prompts
are the same tokens up to the first option (chat template, instruction, the question: on MedQA about
200 of 270 tokens). Prefill is most of an evaluation's time on CPU (it is compute-bound; decoding reads
the weights once per step for the whole batch), so computing that shared part once per question instead
of K times is most of the gain left. The K rows then get copies of the shared KV cache and only their own
endings are prefilled. Greedy outputs equal the unshared path's (tests/generation/test_generation.py checks it on
the embedded model); vLLM does the same on GPU with its automatic prefix caching.

`prefix_groups` finds the groups (prompts sharing `MIN_OWN_SHARED` tokens beyond the beginning that all
prompts share, so a system prompt common to every question does not merge questions), `group_batches`
packs whole groups into batches, and `prefill_groups` fills one batch's KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

from medr1.generation.prefill import merge_left_padded

# Prompts join a group when they share this many tokens beyond what every prompt of the call shares (the
# chat template's header and any fixed instruction before the question): one question's rotations share
# the question; two questions share at most a stock opening ("A 45-year-old man presents with").
MIN_OWN_SHARED = 24


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(ids: Sequence[Sequence[int]], indices: Sequence[int], min_own: int = MIN_OWN_SHARED) -> list[list[int]]:
    """`indices` (into `ids`) grouped by a shared beginning of their own, each group in input order.

    >>> hdr = [7] * 10
    >>> prefix_groups([hdr + [1, 2, 3, 4], hdr + [9], hdr + [1, 2, 3, 5], hdr + [1, 7]], [0, 1, 2, 3], min_own=3)
    [[0, 2], [1], [3]]
    """
    order = sorted(indices, key=lambda i: list(ids[i]))  # a shared beginning makes neighbours
    if len(order) < 2:
        return [list(order)]
    everyone = _common_prefix(ids[order[0]], ids[order[-1]])  # sorted: first and last share the least
    groups: list[list[int]] = []
    for i in order:
        if groups and _common_prefix(ids[groups[-1][0]], ids[i]) >= everyone + min_own:
            groups[-1].append(i)
        else:
            groups.append([i])
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def group_batches(ids: Sequence[Sequence[int]], groups: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Whole groups packed into batches of at most `batch_size` rows, longest groups first (a group larger
    than a batch is split). Each batch is a list of groups.

    >>> group_batches([[1] * 5, [1] * 5, [2] * 9, [3]], [[0, 1], [2], [3]], 3)
    [[[2], [0, 1]], [[3]]]
    """
    pieces = [g[s:s + batch_size] for g in groups for s in range(0, len(g), batch_size)]
    pieces.sort(key=lambda g: -max(len(ids[i]) for i in g))  # stable: equal lengths keep input order
    batches: list[list[list[int]]] = []
    rows = 0
    for g in pieces:
        if not batches or rows + len(g) > batch_size:
            batches.append([])
            rows = 0
        batches[-1].append(g)
        rows += len(g)
    return batches


def prefill_groups(model, rows: Sequence[Sequence[int]], groups: Sequence[int], pad_id: int, cache_kw: str):
    """Prefill `rows` (token lists, each group's rows adjacent; `groups` = their sizes in order), each
    group's common prefix once. Returns (last-position logits, KV cache, attention mask, next position
    per row): a row's cache is [left padding | shared prefix | padding | its own ending], the mask marks
    the padding, positions count real tokens only, so decoding continues as after an unshared prefill."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    device = next(model.parameters()).device
    parts, start = [], 0
    for size in groups:
        members = [list(r) for r in rows[start:start + size]]
        start += size
        shared = min(_common_prefix(members[0], m) for m in members) if size > 1 else 0
        shared = min(shared, min(len(m) for m in members) - 1)  # every row keeps a token of its own
        cache = DynamicCache(config=model.config)
        if shared > 0:
            model(input_ids=torch.tensor([members[0][:shared]], device=device), use_cache=True, logits_to_keep=1,
                  **{cache_kw: cache})
            for layer in cache.layers:
                layer.batch_repeat_interleave(size)
        width = max(len(m) - shared for m in members)
        ids = torch.full((size, width), pad_id, dtype=torch.long, device=device)
        own = torch.zeros((size, width), dtype=torch.long, device=device)
        for j, m in enumerate(members):
            ids[j, width - (len(m) - shared):] = torch.tensor(m[shared:], device=device)
            own[j, width - (len(m) - shared):] = 1
        mask = torch.cat([own.new_ones((size, shared)), own], dim=-1)
        positions = shared + (own.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                       **{cache_kw: cache}).logits[:, -1, :]
        parts.append((cache, mask, logits))
    total = max(mask.shape[1] for _, mask, _ in parts)
    cache = DynamicCache(config=model.config)
    merge_left_padded([c for c, _, _ in parts], total, cache)
    mask = torch.cat([F.pad(m, (total - m.shape[1], 0)) for _, m, _ in parts])
    return torch.cat([lg for _, _, lg in parts]), cache, mask, mask.sum(-1, keepdim=True)
