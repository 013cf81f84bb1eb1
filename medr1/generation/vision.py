"""Evaluating vision-language models: batched generation with images, and accuracy per imaging modality.

One job: the parts of evaluation that differ for visual questions; `medr1.evaluation.evaluate` calls them and
keeps its own streaming, resume and scoring, so predictions.jsonl and summary.json have one format.
Why it is built this way:

- Generation goes through the processor and `model.generate`, not `medr1.generation`'s compact loop:
  Qwen2-VL needs the image features and its 3-D rotary positions (computed inside `generate` from the
  image grid), which a text decoding loop does not build. Batches are still length-sorted (prompt
  tokens with the image tokens counted), longest first, results in the caller's order, and sampling is
  seeded per batch with the caller's RNG left alone, as in `medr1.generation.hf.generate`.
- A prompt longer than the context with `max_new_tokens` comes back as finish_reason "prompt_too_long"
  (never truncated: cutting a question changes it), like the text path.
- vLLM (GPU, `medr1.generation.vllm.generate_vision_vllm`) takes the images as `multi_modal_data`, sized by
  the same bounds as our processor; that path could not be run here (no GPU) and is unmeasured (tests run
  it against a strict fake vLLM).
- MedVLM-R1 reports accuracy per modality (in-domain MRI, out-of-domain CT and X-ray); `modality_scores`
  gives each its accuracy with the same bootstrap CI as the benchmark totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from medr1.generation.hf import (
    PROMPT_TOO_LONG,
    Generation,
    hf_generate_kwargs,
    length_batches,
    tokens_until_eos,
)

log = logging.getLogger(__name__)


def _images_of(messages: list[dict]) -> list:
    from PIL import Image

    out = []
    for m in messages:
        for block in m.get("content") if isinstance(m.get("content"), list) else ():
            if block.get("type") == "image":
                with Image.open(block["image"]) as img:
                    out.append(img.convert("RGB"))
    return out


def _context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for c in (getattr(config, "text_config", None), config):
        value = getattr(c, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def generate_vision(model, processor, prompts: Sequence[list[dict]], *, max_new_tokens: int, batch_size: int,
                    temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, seed: int = 0,
                    on_batch: Callable[[list[Generation]], None] | None = None) -> list[Generation]:
    """Completions of chat prompts with images (`medr1.task.prompts.vision_messages`), batched.

    Args and returns as `medr1.generation.hf.generate` (its `decode` choice aside).
    """
    import torch

    if max_new_tokens < 1 or num_samples < 1 or temperature < 0:
        raise ValueError("max_new_tokens and num_samples must be >= 1, temperature >= 0")
    device = next(model.parameters()).device
    tok = processor.tokenizer
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [tok.eos_token_id])
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]

    def encode(batch):
        return processor.apply_chat_template([list(prompts[i]) for i in batch], add_generation_prompt=True,
                                             tokenize=True, return_dict=True, return_tensors="pt", padding=True)

    lengths = [int(encode([i])["attention_mask"].sum()) for i in range(len(prompts))]
    ctx = _context_length(model)
    results: list[Generation | None] = [None] * len(prompts)
    too_long = [i for i, n in enumerate(lengths) if ctx is not None and n + max_new_tokens > ctx]
    for i in too_long:
        results[i] = Generation(i, [""] * num_samples, lengths[i], [0] * num_samples, [PROMPT_TOO_LONG] * num_samples, 0.0)
    if too_long:
        log.warning("skipped %d prompt(s) longer than the model context (%s) minus max_new_tokens", len(too_long), ctx)
        if on_batch:
            on_batch([results[i] for i in too_long])
    todo = [i for i in range(len(prompts)) if results[i] is None]
    per_batch = max(1, batch_size // num_samples)
    batches = [[todo[j] for j in b] for b in length_batches([lengths[i] for i in todo], per_batch)]
    sampling = hf_generate_kwargs(temperature, top_p)  # exactly the recorded settings, no generation_config leak
    for b, batch in enumerate(batches):
        start = time.perf_counter()
        inputs = encode(batch).to(device)
        width = inputs["input_ids"].shape[1]
        fork = torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
        with torch.inference_mode(), fork:
            torch.manual_seed(seed + b)
            seqs = model.generate(**inputs, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                                  eos_token_id=eos, pad_token_id=pad_id, use_cache=True, **sampling)
        latency = time.perf_counter() - start
        done = []
        for j, i in enumerate(batch):
            rows = seqs[j * num_samples:(j + 1) * num_samples, width:].tolist()
            samples = [tokens_until_eos(row, eos) for row in rows]
            results[i] = Generation(i, [tok.decode(t, skip_special_tokens=True) for t in samples], lengths[i],
                                    [len(t) for t in samples],
                                    ["stop" if t and t[-1] in eos else "length" for t in samples], latency)
            done.append(results[i])
        if on_batch:
            on_batch(done)
    return results  # type: ignore[return-value]


