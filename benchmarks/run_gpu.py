"""GPU performance benchmarks of medr1: vLLM vs batched HF evaluation, Unsloth vs TRL+PEFT GRPO.

NOT RUN YET: no session of this project has had a CUDA GPU, so this script has never been executed on
one. Without a GPU it exits at once with a message (exit code 2) and `benchmarks/run_cpu.py` records
the GPU comparisons as "not measured: no GPU"; no GPU number is ever estimated.

What it measures, side by side in one run (ratios, as in run_cpu.py):
1. `vllm_vs_hf`: the same `--questions` (512) MedQA questions, greedy, `--max-new-tokens`, through
   `medr1.generation.generate_vllm` and through `medr1.generation.generate` (length-grouped HF batches);
   generated tokens/s of each, their ratio, and how many extracted answers agree.
2. `unsloth_vs_trl`: one GRPO configuration, trained for `--steps` steps (after a warm-up step) by
   Unsloth and by TRL + PEFT: a Qwen2.5-1.5B-shaped model, RANDOMLY INITIALISED from its config (no hub
   download, and the timing does not depend on the weights), LoRA r=16 on all projections, 8
   generations, 1024 completion tokens forced by suppressing EOS, bf16. Each backend runs in its own
   child process, because Unsloth patches transformers and TRL when it is imported. Reported: median
   step time, the share of it spent in generation, and peak `torch.cuda.max_memory_allocated`.

Usage: `.venv/bin/python benchmarks/run_gpu.py [--only vllm_vs_hf,unsloth_vs_trl]` on a CUDA machine with
the GPU extra installed (`pip install -e '.[gpu,dev]'`). Writes `benchmarks/results/gpu-<time>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_cpu import RESULTS_DIR, TEMPLATE, format_table, machine, suppress_eos  # noqa: E402

NO_GPU = ("benchmarks/run_gpu.py needs a CUDA GPU and none is available here (torch.cuda.is_available() is "
          "False). Nothing was measured. On CPU run `make bench` (benchmarks/run_cpu.py), which records the "
          "GPU comparisons as 'not measured: no GPU'.")
# Qwen2.5-1.5B's architecture (config.json of Qwen/Qwen2.5-1.5B-Instruct), written out so that no hub
# access is needed: the benchmark times the shapes, not the weights.
QWEN25_15B = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
              "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
              "bos_token_id": 151643, "eos_token_id": 151645}


def bench_vllm_vs_hf(model_spec: str, questions: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """Greedy evaluation of the same questions with vLLM and with batched HF generation."""
    from medr1.data import load_benchmark
    from medr1.generation import generate, generate_vllm
    from medr1.models import load_model
    from medr1.prompts import build_messages
    from medr1.rewards import extract_choice

    qs = list(load_benchmark("medqa", limit=questions))
    prompts = [build_messages(q, TEMPLATE) for q in qs]
    out = {}
    t0 = time.perf_counter()
    v = generate_vllm(model_spec, prompts, max_new_tokens=max_new_tokens, torch_dtype="bfloat16")
    out["vllm_s"] = time.perf_counter() - t0  # includes engine start (CUDA graphs), reported separately
    out["vllm_generate_s"] = v[0].latency_s if v else 0.0
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    model, tok = load_model(model_spec, device="cuda", torch_dtype="bfloat16")
    generate(model, tok, prompts[:batch_size], max_new_tokens=4, batch_size=batch_size)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    h = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    torch.cuda.synchronize()
    out["hf_s"] = time.perf_counter() - t0
    out["vllm_tokens"] = sum(sum(g.completion_tokens) for g in v)
    out["hf_tokens"] = sum(sum(g.completion_tokens) for g in h)
    out["vllm_tok_s"] = out["vllm_tokens"] / out["vllm_generate_s"]
    out["hf_tok_s"] = out["hf_tokens"] / out["hf_s"]
    out["speedup_vllm_over_hf"] = out["vllm_tok_s"] / out["hf_tok_s"]
    out["same_answer"] = sum(extract_choice(a.text, q.options) == extract_choice(b.text, q.options)
                             for a, b, q in zip(v, h, qs, strict=True))
    out["questions"] = len(qs)
    return out


def _random_qwen(path: Path) -> None:
    """Save a randomly initialised Qwen2.5-1.5B-shaped model (bf16) with the embedded SmolLM2 tokenizer
    (its ids are all < the Qwen vocabulary; the tokenizer only has to encode prompts)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from medr1.models import load_tokenizer, resolve_model_path

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_15B)).to(torch.bfloat16)
    tok = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def grpo_child(backend: str, model_dir: str, steps: int, generations: int, tokens: int, lora_r: int) -> dict:
    """One backend's GRPO run in this (child) process; returns step/generation times and peak memory."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers/TRL: it patches them)
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from medr1.data import load_benchmark
    from medr1.generation import eos_ids
    from medr1.models import load_tokenizer
    from medr1.prompts import build_messages

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_config = None
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=512 + tokens,
                                                       load_in_4bit=False, dtype=torch.bfloat16,
                                                       max_lora_rank=lora_r)
        model = FastLanguageModel.get_peft_model(model, r=lora_r, lora_alpha=2 * lora_r, target_modules=targets,
                                                 use_gradient_checkpointing="unsloth", random_state=0)
        tok.padding_side = "left"
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda")
        tok = load_tokenizer(model_dir)
        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=targets, task_type="CAUSAL_LM")
    qs = list(load_benchmark("medqa", limit=steps + 1))
    data = Dataset.from_list([{"prompt": build_messages(q, TEMPLATE)} for q in qs])
    with tempfile.TemporaryDirectory() as out_dir:
        config = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=generations, num_generations=generations,
                            max_completion_length=tokens, max_steps=steps + 1, learning_rate=1e-5, bf16=True,
                            gradient_checkpointing=True, temperature=1.0, beta=0.0, loss_type="dapo",
                            logging_steps=1, save_strategy="no", report_to=[], use_vllm=False,
                            generation_kwargs={"use_cache": True})
        def constant_reward(completions, **kwargs):  # reward cost is not what is measured
            return [0.0] * len(completions)

        trainer = GRPOTrainer(model=model, reward_funcs=[constant_reward],
                              args=config, train_dataset=data, processing_class=tok, peft_config=peft_config)
        gen_s, step_s = [], []
        orig_gen, orig_step = trainer._generate_single_turn, trainer.training_step

        def timed(fn, sink):
            def wrapper(*a, **k):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    torch.cuda.synchronize()
                    sink.append(time.perf_counter() - t0)
            return wrapper

        trainer._generate_single_turn, trainer.training_step = timed(orig_gen, gen_s), timed(orig_step, step_s)
        torch.cuda.reset_peak_memory_stats()
        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        with suppress_eos(base, eos_ids(trainer.model, tok)):
            trainer.train()
    step, gen = statistics.median(step_s[1:]), statistics.median(gen_s[1:])
    return {"backend": backend, "step_s": step, "generate_s": gen, "generation_share": gen / step,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "raw_step_s": step_s, "raw_generate_s": gen_s}


def bench_unsloth_vs_trl(steps: int, generations: int, tokens: int, lora_r: int, timeout_s: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        _random_qwen(Path(tmp))
        for backend in ("trl", "unsloth"):
            cmd = [sys.executable, __file__, "--child", backend, "--child-model", tmp, "--steps", str(steps),
                   "--generations", str(generations), "--tokens", str(tokens), "--lora-r", str(lora_r)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            rows[backend] = (json.loads(line[7:]) if line else
                             {"backend": backend, "error": (p.stderr.strip().splitlines() or ["no output"])[-1]})
    if "error" not in rows["trl"] and "error" not in rows["unsloth"]:
        rows["step_speedup_unsloth"] = rows["trl"]["step_s"] / rows["unsloth"]["step_s"]
        rows["memory_ratio_unsloth_to_trl"] = rows["unsloth"]["peak_memory_gib"] / rows["trl"]["peak_memory_gib"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="vllm_vs_hf,unsloth_vs_trl")
    parser.add_argument("--model", default="Qwen/Qwen2.5-1.5B-Instruct", help="model for vllm_vs_hf")
    parser.add_argument("--questions", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64, help="HF batch size")
    parser.add_argument("--steps", type=int, default=3, help="measured GRPO steps (after one warm-up)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024, help="completion tokens (EOS suppressed)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per GRPO child process")
    parser.add_argument("--child", choices=["trl", "unsloth"], help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.child:
        r = grpo_child(args.child, args.child_model, args.steps, args.generations, args.tokens, args.lora_r)
        print("RESULT " + json.dumps(r))
        return 0
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "load_before": os.getloadavg()}
    only = set(args.only.split(","))
    if "vllm_vs_hf" in only:
        results["vllm_vs_hf"] = r = bench_vllm_vs_hf(args.model, args.questions, args.max_new_tokens, args.batch_size)
        print(format_table(f"vLLM vs batched HF, {r['questions']} MedQA questions, greedy", [r],
                           ["vllm_tok_s", "hf_tok_s", "speedup_vllm_over_hf", "same_answer", "vllm_s", "hf_s"]))
    if "unsloth_vs_trl" in only:
        results["unsloth_vs_trl"] = r = bench_unsloth_vs_trl(args.steps, args.generations, args.tokens, args.lora_r,
                                                             args.timeout)
        print(format_table(f"Unsloth vs TRL+PEFT GRPO (random Qwen2.5-1.5B, LoRA r={args.lora_r}, "
                           f"{args.generations} generations, {args.tokens} tokens)",
                           [r[b] for b in ("trl", "unsloth")],
                           ["backend", "step_s", "generate_s", "generation_share", "peak_memory_gib", "error"]))
    results["load_after"] = os.getloadavg()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
