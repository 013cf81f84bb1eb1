"""Batched generation: the hot loop of evaluation (and of any sampling we do outside TRL).

Generation dominates evaluation time, so this module is built for throughput on one device:

- The chat template is applied once per prompt and prompts are tokenized without padding; then they
  are SORTED BY LENGTH and neighbours are batched, so a batch pads to nearly its own length instead of
  the longest prompt in the set. Longest batches go first, so an out-of-memory error shows in the
  first seconds rather than at the end. Results come back in the caller's order.
- Inside a batch, prompts are prefilled in small groups of neighbours, each at its own width, and their
  KV caches are left-padded into one decode batch (`medr1.generation.prefill`): prefill is compute-bound on CPU, so
  a batch prefilled in one pass paid for padding up to its longest prompt.
- Work that prompts have in common is done once: the samples of one prompt share its prefill (its
  cache is repeated), and prompts sharing most of their tokens (a question's option rotations) are
  batched together with their common beginning prefilled once (`medr1.generation.prefix_sharing`). A decode step
  of a few rows costs about what one row does (it reads every weight once); at tens of rows it becomes
  compute-bound too (the demo's evaluation was slower at batch 128 than at 64).
- Decoding runs under `torch.inference_mode()` with a KV cache. The default `decode="compact"` loop is
  our own: once a quarter of a batch has emitted EOS it drops those rows from the batch and from the KV
  cache, so a batch whose answers have mostly finished stops paying for them (HF `generate` keeps
  computing finished rows to the end). Not at every EOS: dropping rows copies the whole cache. `decode="hf"` calls `model.generate` instead; both are greedy when
  temperature == 0 and give the same greedy texts (tests/generation/test_generation.py checks it on the embedded
  model). Every path samples with exactly `medr1.models.base.sampling_record(temperature, top_p)`:
  temperature and top-p, nothing else. The compact loop applies only these; `model.generate` (hf, static) is passed
  `hf_generate_kwargs`, which sets every logits processor a model's generation_config may switch on
  (Qwen2.5's top_k 20 and repetition penalty 1.05, ...) to its no-op explicitly (a kwarg of `generate`
  outranks the model's generation_config; an absent one does not); vLLM gets the same values
  (`medr1.generation.vllm.vllm_request_settings`). So what settings.json records is what shaped a completion.
- Sampling is seeded per batch (`seed + batch number`) with a private `torch.Generator`, so a rerun
  with the same prompts, batch size and seed gives the same samples, and the caller's global RNG is
  left alone.
- A prompt that does not fit the model context together with `max_new_tokens` is never truncated
  (cutting a question changes it) and never crashes a batch: it comes back with
  finish_reason "prompt_too_long", no text, and is counted in the log.
- The GPU path (vLLM) and the choice between the two live in `medr1.generation.backends`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medr1.generation.prefill import cache_kwarg, plain_cache, prefill_grouped
from medr1.generation.prefix_sharing import group_batches, prefill_groups, prefix_groups

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"
# The compact loop drops finished rows once at least this fraction (num/den) of the batch has finished.
COMPACT_FRACTION_NUM, COMPACT_FRACTION_DEN = 1, 4
PROMPT_HEAD = 8  # first token ids of each prompt kept in its Generation (BOS, role markers)


@dataclass
class Generation:
    """The completion(s) of one prompt.

    Attributes:
        index: position of the prompt in the caller's list.
        texts: one completion per sample (special tokens removed); empty strings when skipped.
        prompt_tokens: prompt length in tokens (after the chat template).
        completion_tokens: generated tokens per sample, the stop token included.
        finish_reasons: per sample, "stop" (EOS), "length" (hit max_new_tokens) or "prompt_too_long".
        latency_s: wall time of the batch that produced this prompt's completions.
        prompt_head: the prompt's first `PROMPT_HEAD` token ids as sent (recorded per prediction row: the
            text can be identical while the tokens differ, e.g. one BOS or two).
    """

    index: int
    texts: list[str]
    prompt_tokens: int
    completion_tokens: list[int]
    finish_reasons: list[str]
    latency_s: float
    prompt_head: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The first (for greedy decoding, the only) completion."""
        return self.texts[0]

    @property
    def finish_reason(self) -> str:
        """"length" when any sample was cut by max_new_tokens, else the first sample's reason."""
        return "length" if "length" in self.finish_reasons else self.finish_reasons[0]

    @property
    def skipped(self) -> bool:
        return self.finish_reasons[0] == PROMPT_TOO_LONG


def set_cpu_threads() -> int:
    """Cap torch's CPU threads at the cores this process may run on.

    Containers often show torch the host's core count, and more BLAS threads than cores make decoding
    several times slower (threads spin waiting for each other). Only ever lowers the count, so a caller
    who chose fewer threads (or OMP_NUM_THREADS) keeps them.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------------
# Prompt preparation
# --------------------------------------------------------------------------------------------------


def encode_prompts(tokenizer, prompts: Sequence[list[dict] | str], *, add_special_tokens: bool = False
                   ) -> list[list[int]]:
    """Token ids per prompt, unpadded. Chat messages go through the chat template once (with the
    generation prompt); plain strings are tokenized as they are, special tokens included.

    The template already writes BOS and role markers, so its text is tokenized without special tokens,
    unless `add_special_tokens`: HuatuoGPT-o1's evaluation sent the rendered text to an SGLang server that
    tokenized it with `tokenizer.encode(text)` (special tokens on), so a Llama-3 prompt began with
    <|begin_of_text|> twice; the huatuo-o1 protocols reproduce that (`medr1.task.protocols`).
    """
    ids = []
    for p in prompts:
        if isinstance(p, str):
            ids.append(tokenizer(p, add_special_tokens=True)["input_ids"])
        else:
            text = tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False)
            ids.append(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    return ids


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    >>> length_batches([3, 9, 1, 8, 2], 2)
    [[1, 3], [0, 4], [2]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # Stable sort: equal lengths keep input order, so batches do not depend on sort internals.
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return sorted(ids)


def _left_pad(rows: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _next_tokens(logits, temperature: float, top_p: float, generator):
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        # Drop a token when the mass before it already reaches top_p; the most likely token always stays.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode_compact(model, input_ids, attention_mask, *, max_new_tokens, temperature, top_p, eos, generator,
                    num_samples=1, shared_groups=None):
    """Token lists per row (`num_samples` rows per prompt row, adjacent), dropping finished rows from the
    batch and the KV cache as they stop.

    Each prompt is prefilled once and its cache repeated for its samples: prefill is most of the cost on
    CPU, and a GRPO-style group of 4 samples of one prompt would otherwise compute its prompt 4 times.
    `shared_groups` (sizes of adjacent row groups sharing a beginning; `input_ids` is then a list of token
    lists) prefills each group's common prefix once (`medr1.generation.prefix_sharing`).
    """
    import torch
    from transformers import DynamicCache

    cache_kw = cache_kwarg(model)
    if shared_groups:

        # pad id 0: padded slots are masked, any id in the vocabulary serves
        logits, cache, attention_mask, next_pos = prefill_groups(model, input_ids, shared_groups, 0, cache_kw)
    else:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        logits = prefill_grouped(model, input_ids, attention_mask, position_ids, cache, cache_kw)
        next_pos = position_ids[:, -1:] + 1
    if num_samples > 1:
        for layer in cache.layers:
            layer.batch_repeat_interleave(num_samples)
        logits, attention_mask, next_pos = (t.repeat_interleave(num_samples, dim=0)
                                            for t in (logits, attention_mask, next_pos))
    n = attention_mask.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    alive = torch.arange(n, device=attention_mask.device)
    eos_t = torch.tensor(eos, device=attention_mask.device)
    finished = torch.zeros(n, dtype=torch.bool, device=attention_mask.device)
    for step in range(max_new_tokens):
        tokens = _next_tokens(logits, temperature, top_p, generator)
        for row, tok, done in zip(alive.tolist(), tokens.tolist(), finished.tolist(), strict=True):
            if not done:
                out[row].append(tok)
        if step == max_new_tokens - 1:
            break
        finished |= torch.isin(tokens, eos_t)
        n_done = int(finished.sum())
        if n_done == finished.numel():
            break
        # Dropping rows copies the whole KV cache, so it pays only once a good share of the batch is done;
        # until then finished rows ride along and their tokens are ignored.
        if n_done * COMPACT_FRACTION_DEN >= finished.numel() * COMPACT_FRACTION_NUM:
            idx = (~finished).nonzero().squeeze(-1)
            cache.batch_select_indices(idx)
            alive, tokens, attention_mask, next_pos = alive[idx], tokens[idx], attention_mask[idx], next_pos[idx]
            finished = finished[idx]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        logits = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=next_pos,
                       use_cache=True, **{cache_kw: cache}).logits[:, -1, :]
        next_pos = next_pos + 1
    return out


def sample_token_ids(model, prompt_ids: Sequence[list[int]], *, num_samples: int, max_new_tokens: int,
                     temperature: float, top_p: float, eos: Sequence[int], pad_id: int, generator=None,
                     batch_size: int = 64) -> list[list[int]]:
    """Completion token ids (EOS included when reached) for each prompt in `prompt_ids`, `num_samples` per
    prompt, adjacent and in input order: the compact loop on token ids, each prompt prefilled once.

    For callers that already tokenized (GRPO's generation step, `medr1.train.sampling`). Prompts are not
    sorted by length: a group of samples must stay together, and GRPO's prompts are few per step.
    """
    import torch

    device = next(model.parameters()).device
    out: list[list[int]] = []
    per_batch = max(1, batch_size // num_samples)
    with torch.inference_mode():
        for s in range(0, len(prompt_ids), per_batch):
            input_ids, mask = _left_pad([list(r) for r in prompt_ids[s:s + per_batch]], pad_id, device)
            out.extend(_decode_compact(model, input_ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, eos=list(eos), generator=generator, num_samples=num_samples))
    return out


def static_cache_kwargs(compile: bool | str = "auto") -> dict:
    """`model.generate` arguments of the static-KV-cache path (`decode="static"`).

    A static cache has fixed shapes (batch x prompt width + max_new_tokens), which is what lets
    transformers compile the decode step with `torch.compile` (mode "reduce-overhead": CUDA graphs, so one
    decode step is one graph launch instead of hundreds of kernel launches; measured on an H100, a 1.5B
    model's decode step took ~30x the time of reading its weights, i.e. launch-bound).

    Args:
        compile: "auto" = transformers' rule (compile on CUDA, not on CPU); True = compile on any device;
            False = static cache without compilation.
    """
    from transformers import CompileConfig

    if compile not in ("auto", True, False):
        raise ValueError(f"compile must be 'auto', True or False, got {compile!r}")
    kwargs: dict = {"cache_implementation": "static"}
    if compile is False:
        kwargs["disable_compile"] = True
    elif compile is True:
        config = CompileConfig(fullgraph=False)
        config._compile_all_devices = True  # transformers' switch for compiling off CUDA (used by its tests)
        kwargs["compile_config"] = config
    return kwargs


# model.generate's settings that could shape a completion beyond temperature and top-p, each at its no-op: a
# model's generation_config switches some on (top_k 20, repetition_penalty 1.05 for Qwen2.5-Instruct), and
# transformers' own default top_k is 50. Passed as kwargs, which outrank the generation_config.
HF_NEUTRAL = {"top_k": 0, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
              "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
              "bad_words_ids": None, "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None,
              "forced_bos_token_id": None, "forced_eos_token_id": None, "min_length": 0, "min_new_tokens": None,
              "exponential_decay_length_penalty": None, "num_beams": 1, "diversity_penalty": 0.0,
              "guidance_scale": None, "renormalize_logits": False, "top_h": None}


def hf_generate_kwargs(temperature: float, top_p: float) -> dict:
    """`model.generate` kwargs that decode with exactly `medr1.models.base.sampling_record(temperature, top_p)`."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()
    neutral = {k: v for k, v in HF_NEUTRAL.items() if k in known}  # keys this transformers version has
    if temperature > 0:
        return {**neutral, "do_sample": True, "temperature": temperature, "top_p": top_p}
    return {**neutral, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def _decode_hf(model, input_ids, attention_mask, *, max_new_tokens, temperature, top_p, eos, pad_id, **extra):
    sampling = hf_generate_kwargs(temperature, top_p)
    seqs = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                          eos_token_id=eos, pad_token_id=pad_id, use_cache=True, **sampling, **extra)
    return [tokens_until_eos(row, eos) for row in seqs[:, input_ids.shape[1]:].tolist()]


def tokens_until_eos(row: Sequence[int], eos) -> list[int]:
    """A generated row up to and including its first EOS token: `generate` pads rows that stopped early.

    >>> tokens_until_eos([5, 6, 2, 0, 0], eos={2})
    [5, 6, 2]
    """
    toks = []
    for t in row:
        toks.append(t)
        if t in eos:
            break
    return toks


def generate(
    model,
    tokenizer,
    prompts: Sequence[list[dict] | str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    on_batch: Callable[[list[Generation]], None] | None = None,
    decode: str = "compact",
    compile: bool | str = "auto",
    share_prefixes: bool = True,
    add_special_tokens: bool = False,
) -> list[Generation]:
    """Generate completions for many prompts with length-grouped batches.

    Args:
        model, tokenizer: from `medr1.models.load.load_model` (left padding, pad token set).
        prompts: chat messages (the chat template is applied) or already-formatted strings.
        max_new_tokens: cap per completion; a completion that reaches it has finish_reason "length".
        batch_size: sequences decoded together (prompts x samples), bounding memory.
        temperature: 0 = greedy; > 0 samples.
        top_p: nucleus sampling when temperature > 0.
        num_samples: completions per prompt (needs temperature > 0 to differ).
        seed: sampling seed (batch b uses seed + b); greedy decoding ignores it.
        on_batch: called with each finished batch's `Generation`s (input order within the batch is not
            guaranteed; use `.index`), so callers can stream results to disk.
        decode: "compact" (own KV-cache loop that drops finished rows), "hf" (`model.generate`), or "static"
            (`model.generate` with a static KV cache, compiled with torch.compile on CUDA; the GPU path for
            evaluation without vLLM; greedy outputs equal "hf", tests/generation/test_generation.py checks it on CPU).
        compile: for decode="static": "auto" (compile on CUDA only), True, or False (`static_cache_kwargs`).
        share_prefixes: decode="compact": prompts sharing most of their tokens (one question's option
            rotations) are batched together and their common beginning prefilled once
            (`medr1.generation.prefix_sharing`); False prefills every prompt whole (the tests' reference).
        add_special_tokens: tokenize chat-rendered prompts with special tokens again (`encode_prompts`).

    Returns:
        One `Generation` per prompt, in input order.

    >>> gens = generate(model, tok, [[{"role": "user", "content": "Hi"}]], max_new_tokens=8)  # doctest: +SKIP
    >>> gens[0].text, gens[0].finish_reason  # doctest: +SKIP
    ('Hello! How can I help you today?', 'length')
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if decode not in ("compact", "hf", "static"):
        raise ValueError(f"decode must be 'compact', 'hf' or 'static', got {decode!r}")
    extra = static_cache_kwargs(compile) if decode == "static" else {}
    device = next(model.parameters()).device
    if device.type == "cpu":
        set_cpu_threads()
    ids = encode_prompts(tokenizer, prompts, add_special_tokens=add_special_tokens)
    eos = eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the tokenizer/model define no EOS token; cannot tell when a completion ends")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    ctx = context_length(model)
    results: list[Generation | None] = [None] * len(ids)

    too_long = [i for i, r in enumerate(ids) if ctx is not None and len(r) + max_new_tokens > ctx]
    for i in too_long:
        results[i] = Generation(i, [""] * num_samples, len(ids[i]), [0] * num_samples,
                                [PROMPT_TOO_LONG] * num_samples, 0.0, ids[i][:PROMPT_HEAD])
    if too_long:
        log.warning("skipped %d prompt(s) longer than the model context (%s tokens) minus max_new_tokens (%d)",
                    len(too_long), ctx, max_new_tokens)
        if on_batch:
            on_batch([results[i] for i in too_long])
    todo = [i for i in range(len(ids)) if results[i] is None]
    prompts_per_batch = max(1, batch_size // num_samples)
    batches = [[todo[j] for j in b] for b in length_batches([len(ids[i]) for i in todo], prompts_per_batch)]
    group_sizes: list[list[int] | None] = [None] * len(batches)
    if decode == "compact" and share_prefixes and plain_cache(model):

        groups = prefix_groups(ids, todo)
        if any(len(g) > 1 for g in groups):  # else the length batches above are as good
            packed = group_batches(ids, groups, prompts_per_batch)
            batches = [[i for g in batch for i in g] for batch in packed]
            group_sizes = [[len(g) for g in batch] for batch in packed]

    for b, batch in enumerate(batches):
        start = time.perf_counter()
        # The compact loop prefills each prompt once and repeats its cache; model.generate takes every row.
        copies = 1 if decode == "compact" else num_samples
        if group_sizes[b]:
            input_ids, mask = [ids[i] for i in batch], None
        else:
            input_ids, mask = _left_pad([ids[i] for i in batch for _ in range(copies)], pad_id, device)
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=device).manual_seed(seed + b)
        # `generate` draws from the global RNG; fork it so callers' random state is untouched.
        fork = torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
        with torch.inference_mode(), fork if decode != "compact" else contextlib.nullcontext():
            if decode != "compact":
                torch.manual_seed(seed + b)
                tokens = _decode_hf(model, input_ids, mask, max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, eos=eos, pad_id=pad_id, **extra)
            else:
                tokens = _decode_compact(model, input_ids, mask, max_new_tokens=max_new_tokens,
                                         temperature=temperature, top_p=top_p, eos=eos, generator=generator,
                                         num_samples=num_samples, shared_groups=group_sizes[b])
        latency = time.perf_counter() - start
        done = []
        for j, i in enumerate(batch):
            samples = tokens[j * num_samples:(j + 1) * num_samples]
            results[i] = Generation(
                index=i,
                texts=[tokenizer.decode(t, skip_special_tokens=True) for t in samples],
                prompt_tokens=len(ids[i]),
                completion_tokens=[len(t) for t in samples],
                finish_reasons=["stop" if t and t[-1] in eos else "length" for t in samples],
                latency_s=latency,
                prompt_head=ids[i][:PROMPT_HEAD],
            )
            done.append(results[i])
        if on_batch:
            on_batch(done)
    return results  # type: ignore[return-value]
