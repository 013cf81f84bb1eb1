"""CPU performance benchmarks of medr1 (`make bench`): ratios measured side by side in one run.

Every number this script reports is a RATIO of two measurements taken in the same process, minutes apart,
on the same inputs: batched vs one-question-at-a-time evaluation, batch-1 decoding vs the memory
bandwidth measured here, generation inside a TRL GRPO step vs `medr1.generation.hf.generate`, and how
time grows with questions, generations and completion length. Absolute seconds are printed too, but
they depend on the machine and on whoever else uses it; compare ratios, never numbers from two runs.

How it is built, and why:
- Every completion is forced to exactly `new_tokens` tokens by a forward hook that pushes the EOS logits
  to -1e9 (`suppress_eos`). Without it a batch's cost depends on when greedy answers happen to stop,
  and "tokens/s" compares different amounts of work. The same hook works for our decode loop, HF
  `generate` and TRL's generation inside a GRPO step.
- A second pair of hooks on the model (`ForwardProfile`) times each forward call and splits it into
  prefill (the prompt pass, more than one position) and decode (one position per row). That split is
  the profile that shows what limits batching: prefill costs the same per prompt token at any batch
  size, so batching only speeds up the decode part.
- `main` sets `OMP_WAIT_POLICY=PASSIVE` before torch is imported (unless the caller set it; torch is
  imported inside functions only, so importing this module changes nothing). With OpenMP's
  default spinning, two torch threads on two busy cores ran up to 15x slower than one thread in our
  measurements; the `threads` benchmark measures the four combinations in child processes.
- Batch-1 evaluation of all 32 questions takes minutes on two cores; the default configuration runs it
  on the first `batch1_questions` (8) and says so in the table; `--config full` runs all of them and
  the 256-question scaling point (longer than the 10-minute budget of `make bench`).
- GPU comparisons (vLLM vs HF, Unsloth vs TRL) live in `benchmarks/run_gpu.py`; without a CUDA GPU this
  script records "not measured: no GPU" and never estimates a GPU number.

Results: a table per benchmark on stdout, and `benchmarks/results/cpu-<time>.json` (+ a PNG of the
GRPO step-time grid) with the machine description (CPU model, cores, GPU, library versions, load
average before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL_SPEC = "embedded:smollm2-135m"
TEMPLATE = "letter"  # the demo's evaluation template: ~265 prompt tokens per MedQA question
NOT_MEASURED_GPU = "not measured: no GPU"


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run. `default` fits `make bench` (~10 min on 2 cores); see CONFIGS."""

    eval_questions: int = 32       # benchmark 1: MedQA questions, batched
    batch1_questions: int = 8      # ... of which this many also run one at a time (batch-1 is slow)
    new_tokens: int = 32           # forced completion length (EOS suppressed)
    batch_size: int = 32
    variant_questions: int = 4     # dtype / attention variants: a small side-by-side
    variant_tokens: int = 16
    scaling_questions: int = 128   # bf16 batched evaluation of this many vs eval_questions
    grpo_prompts: int = 2          # benchmark 3: prompts x generations per step
    grpo_generations: int = 4
    grpo_tokens: int = 32
    grpo_steps: int = 2            # measured steps, after one warm-up step
    grid_generations: tuple[int, ...] = (2, 4, 8)
    grid_lengths: tuple[int, ...] = (16, 32, 64)
    grid_steps: int = 1
    threads_tokens: int = 16       # thread-setting micro-benchmark, in child processes
    bandwidth_mib: int = 1024


CONFIGS = {
    "default": Config(),
    "full": Config(batch1_questions=32, scaling_questions=256, grid_steps=2),
    # For tests/tools/test_bench_cpu.py and debugging: seconds, not minutes.
    "smoke": Config(eval_questions=4, batch1_questions=2, new_tokens=4, batch_size=4, variant_questions=2,
                    variant_tokens=4, scaling_questions=8, grpo_prompts=1,
                    grpo_generations=2, grpo_tokens=4, grpo_steps=1, grid_generations=(2,), grid_lengths=(4,),
                    grid_steps=1, threads_tokens=2, bandwidth_mib=16),
}


# --------------------------------------------------------------------------------------------------
# Instruments: forced length, forward profile, timing
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def suppress_eos(model, token_ids):
    """Make `token_ids` (EOS) unreachable, so every completion runs to max_new_tokens.

    A forward hook on the output embedding (lm_head) returns logits with those ids at -1e9: finite, so
    an entropy or log-softmax computed over them (TRL does) stays finite.
    """
    import torch

    head = model.get_output_embeddings()
    ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    def hook(module, args, output):
        return output.index_fill(-1, ids.to(output.device), -1e9)

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class ForwardProfile:
    """Wall time of the model's forward calls, split into prefill (>1 position) and decode (1 position).

    >>> with ForwardProfile(model) as prof:  # doctest: +SKIP
    ...     generate(model, tok, prompts, max_new_tokens=8, batch_size=4)
    >>> prof.prefill_s, prof.decode_s, prof.decode_calls  # doctest: +SKIP
    """

    def __init__(self, model):
        self.model = model
        self.prefill_s = self.decode_s = 0.0
        self.prefill_calls = self.decode_calls = 0
        self._t0: float | None = None
        self._kind = "decode"
        self._handles: list = []

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._kind = "prefill" if ids is not None and ids.shape[-1] > 1 else "decode"
        self._t0 = time.perf_counter()

    def _post(self, module, args, kwargs, output):
        if self._t0 is None:
            return
        dt = time.perf_counter() - self._t0
        self._t0 = None
        if self._kind == "prefill":
            self.prefill_s += dt
            self.prefill_calls += 1
        else:
            self.decode_s += dt
            self.decode_calls += 1

    def __enter__(self):
        self._handles = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         self.model.register_forward_hook(self._post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def _base(model):
    """The transformers model under a PEFT wrapper (hooks go on the module whose forward gets input_ids)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def timed_generate(model, tokenizer, prompts, *, new_tokens: int, batch_size: int, **kwargs) -> dict[str, Any]:
    """`medr1.generation.hf.generate` with EOS suppressed and a forward profile; times and texts.

    Returns:
        dict with total_s, prefill_s (prompt forwards), decode_fwd_s (one-token forwards), decode_s
        (total - prefill: decode forwards plus the loop around them), new_tokens, prompt_tokens, texts,
        end_to_end_tok_s (new tokens / total) and decode_tok_s (new tokens / decode_s).
    """
    from medr1.generation.hf import eos_ids, generate

    base = _base(model)
    with suppress_eos(base, eos_ids(model, tokenizer)), ForwardProfile(base) as prof:
        t0 = time.perf_counter()
        gens = generate(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch_size, **kwargs)
        total = time.perf_counter() - t0
    new = sum(sum(g.completion_tokens) for g in gens)
    decode = max(total - prof.prefill_s, 1e-9)
    return {
        "prompts": len(prompts), "batch_size": batch_size, "total_s": total, "prefill_s": prof.prefill_s,
        "decode_s": decode, "decode_fwd_s": prof.decode_s, "decode_steps": prof.decode_calls,
        "new_tokens": new, "prompt_tokens": sum(g.prompt_tokens for g in gens),
        "end_to_end_tok_s": new / total, "decode_tok_s": new / decode,
        "prefill_tok_s": sum(g.prompt_tokens for g in gens) / max(prof.prefill_s, 1e-9),
        "texts": [g.texts for g in gens],
    }


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "texts"}


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def format_table(title: str, rows: list[dict], columns: list[str]) -> str:
    """A fixed-width text table; floats with 3 significant digits.

    >>> print(format_table("t", [{"a": 1.23456, "b": "x"}], ["a", "b"]))
    t
    a     b
    1.23  x
    """
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _print(title: str, rows: list[dict], columns: list[str]) -> None:
    print("\n" + format_table(title, rows, columns), flush=True)


# --------------------------------------------------------------------------------------------------
# 1. Batched evaluation vs one question at a time
# --------------------------------------------------------------------------------------------------


def bench_batched_eval(model, tokenizer, prompts, options, cfg: Config, *, label: str = "fp32") -> dict:
    """Batch-1 on the first `cfg.batch1_questions` prompts vs length-grouped batches on all of them.

    Args:
        prompts: chat messages (or strings) of `cfg.eval_questions` questions.
        options: the options dict of each question, for `extract_choice` (None entries skip extraction).

    Returns:
        {"rows": [batch-1 row, batched row], "ratios": {...}, "agreement": {...}}. Ratios are per token,
        so a batch-1 subset compares fairly with the batched run on all questions; agreement compares the
        extracted answers on the questions both runs answered.
    """
    from medr1.task.answers import extract_choice

    prompts = list(prompts)[:cfg.eval_questions]
    n1 = min(cfg.batch1_questions, len(prompts))
    one = timed_generate(model, tokenizer, prompts[:n1], new_tokens=cfg.new_tokens, batch_size=1)
    many = timed_generate(model, tokenizer, prompts, new_tokens=cfg.new_tokens, batch_size=cfg.batch_size)
    one["mode"], many["mode"] = f"batch-1 ({label})", f"batched ({label})"
    same = sum(extract_choice(a[0], o) == extract_choice(b[0], o) if o is not None else a[0] == b[0]
               for a, b, o in zip(one["texts"], many["texts"][:n1], options[:n1], strict=True))
    identical = sum(a[0] == b[0] for a, b in zip(one["texts"], many["texts"][:n1], strict=True))
    ratios = {
        "decode_tok_s": many["decode_tok_s"] / one["decode_tok_s"],
        "end_to_end_tok_s": many["end_to_end_tok_s"] / one["end_to_end_tok_s"],
        "prefill_tok_s": many["prefill_tok_s"] / one["prefill_tok_s"],
    }
    return {"rows": [one, many], "ratios": ratios,
            "agreement": {"compared": n1, "same_answer": same, "identical_text": identical}}


def bench_prefix_sharing(model, tokenizer, questions, cfg: Config, *, rotations: int = 2) -> dict:
    """Each question asked under `rotations` option rotations (as `eval_permutations` does), generated with
    every prompt prefilled whole vs each question's common beginning prefilled once (`medr1.generation.prefix_sharing`).

    Args:
        questions: MedQA `Question`s; the first `cfg.eval_questions` are rotated here.

    Returns:
        {"rows": [whole row, shared row], "ratio_total", "ratio_prefill", "identical_text", "compared"}.
    """
    from medr1.data.option_order import cyclic_shift
    from medr1.task.prompts import build_messages

    asked = [build_messages(cyclic_shift(q, k), TEMPLATE) for q in list(questions)[:cfg.eval_questions]
             for k in range(rotations)]
    whole = timed_generate(model, tokenizer, asked, new_tokens=cfg.new_tokens, batch_size=cfg.batch_size,
                           share_prefixes=False)
    shared = timed_generate(model, tokenizer, asked, new_tokens=cfg.new_tokens, batch_size=cfg.batch_size)
    whole["mode"], shared["mode"] = "every prompt whole", "shared beginnings once"
    same = sum(a == b for a, b in zip(whole["texts"], shared["texts"], strict=True))
    return {"rows": [whole, shared], "ratio_total": whole["total_s"] / shared["total_s"],
            "ratio_prefill": whole["prefill_s"] / max(shared["prefill_s"], 1e-9), "identical_text": same,
            "compared": len(asked)}


def bench_variants(prompts, cfg: Config, *, threads: int) -> list[dict]:
    """Batched decoding of the same prompts under settings that might help on this CPU: fp32 vs bf16
    weights, SDPA vs eager attention. Each loads its own model copy (135M parameters: seconds)."""
    import torch

    from medr1.models.load import load_model

    rows = []
    prompts = list(prompts)[:cfg.variant_questions]
    for dtype, attn in (("float32", "sdpa"), ("float32", "eager"), ("bfloat16", "sdpa")):
        model, tok = load_model(MODEL_SPEC, device="cpu", torch_dtype=dtype)
        model.set_attn_implementation(attn)
        torch.set_num_threads(threads)
        for bs in (1, len(prompts)):
            sub = prompts[:2] if bs == 1 else prompts  # batch-1: two prompts suffice for a per-token rate
            r = timed_generate(model, tok, sub, new_tokens=cfg.variant_tokens, batch_size=bs)
            rows.append({"dtype": dtype, "attention": attn, **_strip(r)})
        del model
    return rows


# --------------------------------------------------------------------------------------------------
# 2. Batch-1 decode vs memory bandwidth
# --------------------------------------------------------------------------------------------------


def measure_read_bandwidth(mib: int = 1024, repeats: int = 3) -> dict[str, float]:
    """Read bandwidth in bytes/s: best of `repeats` sums over a `mib` MiB float32 array, with numpy (one
    thread) and torch (all its threads). The larger is the machine's figure: decoding reads weights
    with torch's threads."""
    import numpy as np
    import torch

    a = np.ones(mib * 2**20 // 4, dtype=np.float32)
    a.sum()  # fault the pages in before timing
    out = {}
    for name, fn in (("numpy_sum", a.sum), ("torch_sum", torch.from_numpy(a).sum)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = a.nbytes / best
    out["bytes_per_s"] = max(out["numpy_sum"], out["torch_sum"])
    return out


def bytes_per_decode_token(model, context_tokens: float) -> dict[str, float]:
    """Bytes a batch-1 decode step must read: every weight once (tied embeddings counted once; the
    embedding lookup reads one row, the lm_head reads the matrix) plus the KV cache at `context_tokens`."""
    base = _base(model)
    seen, weights = set(), 0
    for p in base.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            weights += p.numel() * p.element_size()
    c = base.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    elem = next(base.parameters()).element_size()
    kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) * head_dim * elem
    return {"weights": float(weights), "kv_cache": kv * context_tokens, "total": weights + kv * context_tokens}


def bench_bandwidth(model, batch1_row: dict, bandwidth: dict) -> dict:
    """Achieved fraction of read bandwidth at batch-1 decode: decode-forward tokens/s x bytes per token ÷
    measured bandwidth. Uses decode forward time only (the loop around it reads no weights)."""
    steps = batch1_row["decode_steps"]
    tok_s = steps / batch1_row["decode_fwd_s"] if batch1_row["decode_fwd_s"] else 0.0
    context = batch1_row["prompt_tokens"] / batch1_row["prompts"] + batch1_row["new_tokens"] / batch1_row["prompts"] / 2
    per_tok = bytes_per_decode_token(model, context)
    return {"decode_fwd_tok_s": tok_s, "bytes_per_token": per_tok["total"], "weight_bytes": per_tok["weights"],
            "achieved_bytes_per_s": tok_s * per_tok["total"], "bandwidth_bytes_per_s": bandwidth["bytes_per_s"],
            "fraction": tok_s * per_tok["total"] / bandwidth["bytes_per_s"]}


# --------------------------------------------------------------------------------------------------
# 3 + 4. GRPO: generation inside a step vs standalone; step time grid
# --------------------------------------------------------------------------------------------------


def make_grpo_trainer(model_factory, tokenizer, prompts, *, generations: int, tokens: int, steps: int,
                      out_dir: str, prompts_per_step: int):
    """A TRL GRPOTrainer as `medr1.train` builds it (demo params: LoRA r=8 on all projections, dapo loss,
    temperature 1), over `prompts`, with a constant reward (the reward's cost is not what we measure)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from medr1.config import load_params
    from medr1.models.base import lora_config
    from medr1.paths import REPO_ROOT
    from medr1.train.trainer import build_grpo_config

    params = load_params(REPO_ROOT / "params" / "demo.yaml", {
        "num_generations": generations, "per_device_train_batch_size": generations * prompts_per_step,
        "max_completion_length": tokens, "max_steps": steps, "save_steps": 10**6, "logging_steps": 1,
        "reward_funcs": ["accuracy"], "reward_weights": [1.0]})
    config = build_grpo_config(params, out_dir, cuda=False)
    config.report_to = []
    peft_config = lora_config(params)
    n = max(len(prompts), prompts_per_step)
    dataset = Dataset.from_list([{"prompt": prompts[i % len(prompts)]} for i in range(n * (steps + 1))])

    def constant_reward(completions, **kwargs):
        return [0.0] * len(completions)

    model = model_factory()
    trainer = GRPOTrainer(model=model, reward_funcs=[constant_reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def run_grpo_timed(trainer, eos: list[int]) -> dict[str, list[float]]:
    """Train, timing each step (`training_step`, which includes TRL's generation) and each generation
    (`_generate_single_turn`, TRL 1.16's name for the model.generate call of a step)."""
    gen_times: list[float] = []
    step_times: list[float] = []
    prefill: list[float] = []
    decode_fwd: list[float] = []
    original_gen, original_step = trainer._generate_single_turn, trainer.training_step

    def timed_gen(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            with ForwardProfile(_base(trainer.model)) as prof:
                return original_gen(*args, **kwargs)
        finally:
            gen_times.append(time.perf_counter() - t0)
            prefill.append(prof.prefill_s)
            decode_fwd.append(prof.decode_s)

    def timed_step(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original_step(*args, **kwargs)
        finally:
            step_times.append(time.perf_counter() - t0)

    trainer._generate_single_turn, trainer.training_step = timed_gen, timed_step
    try:
        with suppress_eos(_base(trainer.model), eos):
            trainer.train()
    finally:
        trainer._generate_single_turn, trainer.training_step = original_gen, original_step
    return {"generate_s": gen_times, "step_s": step_times, "generate_prefill_s": prefill,
            "generate_decode_fwd_s": decode_fwd}


def bench_grpo_vs_standalone(model_factory, tokenizer, prompts, cfg: Config) -> dict:
    """TRL's generation inside GRPO steps vs `medr1.generation.hf.generate` on the same LoRA-wrapped model,
    prompts, number of completions, length and sampling settings (temperature 1, top-p 1)."""
    from medr1.generation.hf import eos_ids, generate

    prompts = list(prompts)[:cfg.grpo_prompts]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_grpo_trainer(model_factory, tokenizer, prompts, generations=cfg.grpo_generations,
                                    tokens=cfg.grpo_tokens, steps=cfg.grpo_steps + 1, out_dir=tmp,
                                    prompts_per_step=len(prompts))
        eos = sorted(set(eos_ids(trainer.model, tokenizer)) | set(trainer.eos_token_ids))
        t = run_grpo_timed(trainer, eos)
        model = trainer.model
        model.eval()
        standalone, s_prefill, s_decode = [], [], []
        with suppress_eos(_base(model), eos):
            for i in range(cfg.grpo_steps + 1):  # the first is a warm-up, like the first GRPO step
                t0 = time.perf_counter()
                with ForwardProfile(_base(model)) as prof:
                    gens = generate(model, tokenizer, prompts, max_new_tokens=cfg.grpo_tokens, temperature=1.0,
                                    top_p=1.0, num_samples=cfg.grpo_generations, seed=i,
                                    batch_size=len(prompts) * cfg.grpo_generations)
                standalone.append(time.perf_counter() - t0)
                s_prefill.append(prof.prefill_s)
                s_decode.append(prof.decode_s)
        assert all(n == cfg.grpo_tokens for g in gens for n in g.completion_tokens)
        del trainer, model
    trl_gen = statistics.median(t["generate_s"][1:] or t["generate_s"])
    trl_step = statistics.median(t["step_s"][1:] or t["step_s"])
    ours = statistics.median(standalone[1:] or standalone)
    def med(xs):
        return statistics.median(xs[1:] or xs)

    return {"trl_generate_s": trl_gen, "trl_step_s": trl_step, "standalone_generate_s": ours,
            "ratio_trl_to_standalone": trl_gen / ours, "generation_share_of_step": trl_gen / trl_step,
            "trl_prefill_s": med(t["generate_prefill_s"]), "trl_decode_fwd_s": med(t["generate_decode_fwd_s"]),
            "standalone_prefill_s": med(s_prefill), "standalone_decode_fwd_s": med(s_decode),
            "raw": {**t, "standalone_s": standalone}}


def bench_grpo_grid(model_factory, tokenizer, prompts, cfg: Config) -> list[dict]:
    """GRPO step time over num_generations (at the middle length) and completion length (at the middle
    number of generations), one prompt per step; one warm-up step, then `cfg.grid_steps` measured."""
    from medr1.generation.hf import eos_ids

    mid_g = cfg.grid_generations[len(cfg.grid_generations) // 2]
    mid_l = cfg.grid_lengths[len(cfg.grid_lengths) // 2]
    points = [(g, mid_l) for g in cfg.grid_generations] + [(mid_g, n) for n in cfg.grid_lengths if n != mid_l]
    rows = []
    for g, n in points:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_grpo_trainer(model_factory, tokenizer, list(prompts)[:1], generations=g, tokens=n,
                                        steps=cfg.grid_steps + 1, out_dir=tmp, prompts_per_step=1)
            eos = sorted(set(eos_ids(trainer.model, tokenizer)) | set(trainer.eos_token_ids))
            t = run_grpo_timed(trainer, eos)
            del trainer
        step = statistics.median(t["step_s"][1:] or t["step_s"])
        gen = statistics.median(t["generate_s"][1:] or t["generate_s"])
        rows.append({"num_generations": g, "completion_tokens": n, "step_s": step, "generate_s": gen,
                     "generation_share": gen / step})
    return rows


def plot_grid(rows: list[dict], path: Path) -> Path | None:
    """Two panels: step time vs num_generations, and vs completion length (generation part shaded)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by_g = sorted({r["completion_tokens"] for r in rows}, key=lambda n: -sum(r["completion_tokens"] == n for r in rows))
    by_n = sorted({r["num_generations"] for r in rows}, key=lambda g: -sum(r["num_generations"] == g for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, fixed_key, fixed in ((axes[0], "num_generations", "completion_tokens", by_g[0]),
                                      (axes[1], "completion_tokens", "num_generations", by_n[0])):
        sub = sorted((r for r in rows if r[fixed_key] == fixed), key=lambda r: r[key])
        xs = [r[key] for r in sub]
        ax.plot(xs, [r["step_s"] for r in sub], "o-", label="GRPO step")
        ax.plot(xs, [r["generate_s"] for r in sub], "s--", label="generation inside the step")
        ax.set_xlabel(key.replace("_", " "))
        ax.set_ylabel("seconds")
        ax.set_title(f"{fixed_key.replace('_', ' ')} = {fixed}")
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle("TRL GRPO step time on CPU (SmolLM2-135M, LoRA)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# 4. Evaluation scaling; threads
# --------------------------------------------------------------------------------------------------


def bench_scaling(model, tokenizer, prompts, cfg: Config, first: dict) -> list[dict]:
    """Seconds per question (and per prompt token) of batched evaluation: `first` (the batched run of
    benchmark 1 on `cfg.eval_questions`) against the same settings on `cfg.scaling_questions`."""
    big = timed_generate(model, tokenizer, list(prompts)[:cfg.scaling_questions], new_tokens=cfg.new_tokens,
                         batch_size=cfg.batch_size)
    rows = []
    for r in (first, big):
        rows.append({"questions": r["prompts"], **_strip(r), "s_per_question": r["total_s"] / r["prompts"],
                     "ms_per_prompt_token": 1000 * r["total_s"] / r["prompt_tokens"]})
    for r in rows:
        r["ratio_s_per_question"] = r["s_per_question"] / rows[0]["s_per_question"]
        r["ratio_per_prompt_token"] = r["ms_per_prompt_token"] / rows[0]["ms_per_prompt_token"]
    return rows


THREADS_CHILD = """
import json, os, sys, time, torch
sys.path.insert(0, {bench_dir!r})
import run_cpu as rc
from medr1.models.load import load_model
torch.set_num_threads({threads})
model, tok = load_model(rc.MODEL_SPEC, device="cpu")
prompt = {prompt!r}
rc.timed_generate(model, tok, [prompt], new_tokens=2, batch_size=1)  # warm-up
r = rc.timed_generate(model, tok, [prompt], new_tokens={tokens}, batch_size=1)
print("RESULT " + json.dumps(rc._strip(r)))
"""


def bench_threads(prompt, cfg: Config, timeout_s: float = 120) -> list[dict]:
    """Batch-1 prefill and decode with 1 or all threads, OpenMP waiting PASSIVE or ACTIVE (spinning).
    Child processes, because OMP_WAIT_POLICY is read once when the OpenMP runtime starts."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    for policy in ("PASSIVE", "ACTIVE"):
        for threads in sorted({1, cores}):
            code = THREADS_CHILD.format(bench_dir=str(Path(__file__).resolve().parent), threads=threads,
                                        prompt=prompt, tokens=cfg.threads_tokens)
            env = {**os.environ, "OMP_WAIT_POLICY": policy}
            row = {"omp_wait_policy": policy, "threads": threads}
            try:
                out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     timeout=timeout_s)
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    row["error"] = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
                else:
                    row.update(json.loads(line[len("RESULT "):]))
            except subprocess.TimeoutExpired:
                row["error"] = f"timed out after {timeout_s:.0f} s"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Machine description and main
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, GPU (or none), library versions, torch threads and OpenMP policy, load average."""
    import torch

    from medr1.runs import hardware, package_versions

    info = hardware()
    info["gpu"] = ", ".join(info.get("gpus", [])) or "none"
    info["torch_threads"] = torch.get_num_threads()
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    info["affinity_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["packages"] = package_versions()
    info["matplotlib"] = _version("matplotlib")
    return info


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _targets(results: dict) -> list[dict]:
    """Each target of the 'Performance benchmarks' issue, its measured value, and met / not met."""
    rows = []

    def add(name, value, op, bound, note=""):
        if value is None:
            rows.append({"target": name, "value": None, "goal": f"{op} {bound}", "met": "n/a", "note": note})
            return
        ok = value >= bound if op == ">=" else value <= bound
        rows.append({"target": name, "value": value, "goal": f"{op} {bound}", "met": "yes" if ok else "NO",
                     "note": note})

    ev = results.get("batched_eval", {}).get("fp32")
    if ev:
        add("batched/batch-1 decode tok/s", ev["ratios"]["decode_tok_s"], ">=", 6)
        add("batched/batch-1 end-to-end tok/s", ev["ratios"]["end_to_end_tok_s"], ">=", 6,
            "prefill costs the same per token at any batch size")
        a = ev["agreement"]
        add("same answers (fraction)", a["same_answer"] / a["compared"], ">=", 31 / 32,
            f"{a['same_answer']}/{a['compared']} compared")
    bw = results.get("bandwidth", {}).get("fp32")
    if bw:
        add("batch-1 decode / read bandwidth", bw["fraction"], ">=", 0.3)
    g = results.get("grpo_vs_standalone")
    if g:
        add("TRL in-step generation / standalone", g["ratio_trl_to_standalone"], "<=", 1.3)
    sc = results.get("eval_scaling")
    if sc:
        add(f"s/question at {sc[-1]['questions']} / at {sc[0]['questions']}", sc[-1]["ratio_s_per_question"],
            "<=", 1.1)
    for key in ("vllm_vs_hf", "unsloth_vs_trl"):
        add(key, None, "", "", results.get("gpu", {}).get(key, NOT_MEASURED_GPU))
    return rows


def run(cfg: Config, *, only: set[str] | None = None, out_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """Run the benchmarks of `cfg` (all, or those named in `only`), print tables, write JSON + PNG.

    Returns:
        The results dict that was written.
    """
    import torch

    from medr1.data import load_benchmark
    from medr1.generation.hf import encode_prompts, set_cpu_threads
    from medr1.models.load import load_model
    from medr1.task.prompts import build_messages

    def want(name: str) -> bool:
        return only is None or name in only

    started = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"config": asdict(cfg), "started": started, "load_before": os.getloadavg()}
    t_all = time.perf_counter()
    threads = set_cpu_threads()
    results["machine"] = machine()
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cpu_count']} cores ({m['affinity_cores']} usable), GPU: {m['gpu']}, "
          f"torch {m['packages'].get('torch')}, transformers {m['packages'].get('transformers')}, "
          f"trl {m['packages'].get('trl')}; torch threads {threads}, OMP_WAIT_POLICY={m['omp_wait_policy']}; "
          f"load average {results['load_before'][0]:.2f}", flush=True)

    n_questions = max(cfg.eval_questions, cfg.scaling_questions if want("scaling") else 0)
    questions = list(load_benchmark("medqa", limit=n_questions))
    prompts = [build_messages(q, TEMPLATE) for q in questions]
    options = [q.options for q in questions]
    model, tok = load_model(MODEL_SPEC, device="cpu", torch_dtype="float32")
    torch.set_num_threads(threads)
    # GRPO benchmarks train on the shortest prompts: a step costs seconds per prompt token on 2 cores.
    lengths = [len(ids) for ids in encode_prompts(tok, prompts)]
    short = [prompts[i] for i in sorted(range(len(prompts)), key=lambda i: lengths[i])]
    bf16_model = bf16_tok = bf16_batched = None

    if want("bandwidth") or want("batched_eval"):
        bw = measure_read_bandwidth(cfg.bandwidth_mib)
        results["read_bandwidth"] = bw
        print(f"\nread bandwidth: numpy {bw['numpy_sum'] / 1e9:.1f} GB/s (1 thread), torch "
              f"{bw['torch_sum'] / 1e9:.1f} GB/s ({threads} threads)", flush=True)
        results["batched_eval"], results["bandwidth"] = {}, {}
        for label in ("fp32", "bf16"):
            if label == "fp32":
                m_, t_, cfg_d = model, tok, cfg
            else:
                bf16_model, bf16_tok = load_model(MODEL_SPEC, device="cpu", torch_dtype="bfloat16")
                m_, t_, cfg_d = bf16_model, bf16_tok, replace(cfg, batch1_questions=min(cfg.batch1_questions, 4))
            torch.set_num_threads(threads)
            ev = bench_batched_eval(m_, t_, prompts, options, cfg_d, label=label)
            if label == "bf16":
                bf16_batched = ev["rows"][1]
            results["batched_eval"][label] = {"rows": [_strip(r) for r in ev["rows"]], "ratios": ev["ratios"],
                                              "agreement": ev["agreement"]}
            results["bandwidth"][label] = bench_bandwidth(m_, ev["rows"][0], bw)
            _print(f"[1] batched vs batch-1 evaluation, MedQA, {TEMPLATE} template, {cfg.new_tokens} forced new "
                   f"tokens, {label} (batch-1 on the first {cfg_d.batch1_questions} questions)",
                   ev["rows"], ["mode", "prompts", "batch_size", "total_s", "prefill_s", "decode_s", "decode_fwd_s",
                                "new_tokens", "prompt_tokens", "prefill_tok_s", "decode_tok_s", "end_to_end_tok_s"])
            r, a = ev["ratios"], ev["agreement"]
            print(f"    ratio batched/batch-1: decode tok/s {r['decode_tok_s']:.2f}x, end-to-end "
                  f"{r['end_to_end_tok_s']:.2f}x, prefill tok/s {r['prefill_tok_s']:.2f}x; same extracted "
                  f"answer {a['same_answer']}/{a['compared']}, identical text {a['identical_text']}/{a['compared']}")
            b = results["bandwidth"][label]
            print(f"[2] batch-1 decode vs read bandwidth ({label}): {b['decode_fwd_tok_s']:.1f} tok/s x "
                  f"{b['bytes_per_token'] / 1e6:.0f} MB/token = {b['achieved_bytes_per_s'] / 1e9:.2f} GB/s = "
                  f"{b['fraction']:.2f} of {b['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", flush=True)

    if want("scaling"):
        # bf16: prefill, which dominates, runs ~2x faster than fp32 on this CPU, so more questions fit.
        if bf16_model is None:
            bf16_model, bf16_tok = load_model(MODEL_SPEC, device="cpu", torch_dtype="bfloat16")
            torch.set_num_threads(threads)
        if bf16_batched is None:
            bf16_batched = timed_generate(bf16_model, bf16_tok, prompts[:cfg.eval_questions],
                                          new_tokens=cfg.new_tokens, batch_size=cfg.batch_size)
        rows = bench_scaling(bf16_model, bf16_tok, prompts, cfg, bf16_batched)
        results["eval_scaling"] = rows
        _print(f"[4a] batched evaluation scaling (bf16, {cfg.new_tokens} forced tokens, batch {cfg.batch_size})",
               rows, ["questions", "total_s", "prompt_tokens", "s_per_question", "ms_per_prompt_token",
                      "ratio_s_per_question", "ratio_per_prompt_token"])
    bf16_model = None

    if want("prefix_sharing"):
        ps = bench_prefix_sharing(model, tok, questions, cfg)
        results["prefix_sharing"] = {"rows": [_strip(r) for r in ps["rows"]],
                                     **{k: v for k, v in ps.items() if k != "rows"}}
        _print(f"[1d] option rotations: each prompt whole vs shared beginnings once (MedQA, 2 rotations of "
               f"{cfg.eval_questions} questions, {cfg.new_tokens} forced tokens, batch {cfg.batch_size}, fp32)",
               ps["rows"], ["mode", "prompts", "total_s", "prefill_s", "decode_s", "prompt_tokens"])
        print(f"    ratio whole/shared: total {ps['ratio_total']:.2f}x, prefill {ps['ratio_prefill']:.2f}x; identical "
              f"text {ps['identical_text']}/{ps['compared']}", flush=True)

    if want("variants"):
        rows = bench_variants(prompts, cfg, threads=threads)
        results["variants"] = rows
        _print(f"[1b] settings, {cfg.variant_questions} questions, {cfg.variant_tokens} forced tokens", rows,
               ["dtype", "attention", "batch_size", "total_s", "prefill_tok_s", "decode_tok_s", "end_to_end_tok_s"])

    if want("threads"):
        rows = bench_threads(prompts[0], cfg)
        results["threads"] = rows
        _print(f"[1c] threads and OpenMP wait policy, batch-1, {cfg.threads_tokens} tokens (child processes)", rows,
               ["omp_wait_policy", "threads", "prefill_s", "decode_s", "prefill_tok_s", "decode_tok_s", "error"])

    def fresh_model():
        m, _ = load_model(MODEL_SPEC, device="cpu", torch_dtype="float32")
        torch.set_num_threads(threads)
        return m

    if want("grpo"):
        g = bench_grpo_vs_standalone(fresh_model, tok, short, cfg)
        results["grpo_vs_standalone"] = g
        _print(f"[3] generation inside a TRL GRPO step vs medr1.generation.hf.generate ({cfg.grpo_prompts} shortest "
               f"prompts x {cfg.grpo_generations} generations, {cfg.grpo_tokens} tokens, temperature 1, LoRA model)",
               [g], ["trl_generate_s", "standalone_generate_s", "ratio_trl_to_standalone", "trl_step_s",
                     "generation_share_of_step"])
        _print("    profile of the generation (forward time: prompt pass, one-token steps)", [
            {"where": "TRL in-step", "total_s": g["trl_generate_s"], "prefill_s": g["trl_prefill_s"],
             "decode_fwd_s": g["trl_decode_fwd_s"]},
            {"where": "standalone", "total_s": g["standalone_generate_s"], "prefill_s": g["standalone_prefill_s"],
             "decode_fwd_s": g["standalone_decode_fwd_s"]}], ["where", "total_s", "prefill_s", "decode_fwd_s"])

    out_dir.mkdir(parents=True, exist_ok=True)
    if want("grpo_grid"):
        rows = bench_grpo_grid(fresh_model, tok, short, cfg)
        results["grpo_grid"] = rows
        png = plot_grid(rows, out_dir / f"grpo-grid-{started}.png")
        results["grpo_grid_png"] = str(png) if png else None
        _print("[4b] GRPO step time vs num_generations and completion length (the shortest prompt, 1 per step)", rows,
               ["num_generations", "completion_tokens", "step_s", "generate_s", "generation_share"])

    gpu = torch.cuda.is_available()
    results["gpu"] = {k: ("see benchmarks/run_gpu.py" if gpu else NOT_MEASURED_GPU)
                      for k in ("vllm_vs_hf", "unsloth_vs_trl")}
    print(f"\n[5] GPU comparisons (vLLM vs HF; Unsloth vs TRL): "
          f"{'run benchmarks/run_gpu.py on this machine' if gpu else NOT_MEASURED_GPU}")

    results["targets"] = _targets(results)
    results["load_after"] = os.getloadavg()
    results["elapsed_s"] = time.perf_counter() - t_all
    _print("targets", results["targets"], ["target", "value", "goal", "met", "note"])
    path = out_dir / f"cpu-{started}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nload average before {results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}; "
          f"{results['elapsed_s']:.0f} s; wrote {path}", flush=True)
    return results


BENCHMARKS = ("batched_eval", "bandwidth", "prefix_sharing", "variants", "threads", "grpo", "scaling", "grpo_grid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default",
                        help="sizes: default (make bench, ~10 min on 2 cores), full (batch-1 on all 32 "
                             "questions, scaling to 256), smoke (seconds)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch starts its OpenMP runtime
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(BENCHMARKS):
        parser.error(f"unknown benchmark(s) {sorted(only - set(BENCHMARKS))}; known: {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars at every model load
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(CONFIGS[args.config], only=only, out_dir=Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
