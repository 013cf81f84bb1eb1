"""GPU benchmark of medr1's GRPO step: a recipe's real architecture, both backends, timed per optimizer step.

What it measures (`--recipe params/X.yaml`, default the Llama-3.1-8B recipe):
- The recipe's architecture (`configs/architectures/*.json`, the published config.json written out: no hub
  access) with RANDOM weights (bf16) and the embedded SmolLM2 tokenizer: step time and memory depend on
  the shapes, not on the weights.
- The trainer is built by `medr1.train.trainer`, the same functions `medr1 train` uses, from the recipe's own
  params (LoRA, batch, accumulation, generations, loss, clipping, gradient checkpointing), with only what
  is listed in the result's `overrides` changed (model path, device, steps, completion length, checkpoints
  off, and vLLM off unless `--vllm recipe`). Every completion runs to its full length (EOS made
  unreachable), so both backends do equal work.
- Each backend runs in its own child process (Unsloth patches transformers and TRL on import). Per
  backend: median seconds per *optimizer* step after `--warmup` steps (`medr1.train.step_timer.StepTimer`, a
  TrainerCallback, CUDA-synchronised), generation's share of those steps (the trainer's generation
  method, wrapped), peak `torch.cuda.max_memory_allocated`, and the effective GRPO config read back from
  the trainer (it must be the same for both backends).
- `--only generation` adds plain `model.generate` vs our compact loop vs the static-KV-cache +
  torch.compile loop (and vLLM where installed) on the same random model, greedy.

Budget: the default (one recipe, two backends, 1 warm-up + 2 measured steps, 256 completion tokens) is
sized to finish within `--budget-s` (480 s) on one H100; children that would run past it are stopped and
reported as such. `--dry-run` prints one JSON line (architecture, `params_b`, the `grpo_config` it would
use) without a GPU. Results: `benchmarks/results/gpu-<time>.json` and a printed table.

`--acceptance` (benchmarks/acceptance.py) is the device acceptance run of the 7B recipe: both backends for
two steps, the generation engine's stale-weights check, static vs HF generation, vLLM when it imports, in
at most 8 minutes and one JSON; `--acceptance --dry-run` rehearses it on CPU with a tiny model.

Usage: `.venv/bin/python benchmarks/run_gpu.py [--recipe params/qwen2.5-7b-grpo.yaml] [--dry-run]` on a CUDA
machine with the GPU extra (`pip install -e '.[gpu,dev]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_cpu import RESULTS_DIR, format_table, machine, suppress_eos  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARCH_DIR = REPO / "configs" / "architectures"
DEFAULT_RECIPE = "params/llama3.1-8b-grpo.yaml"
# A recipe's `model` -> its architecture file in configs/architectures/.
ARCHITECTURES = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1-8b",
    "meta-llama/Llama-3.1-8B": "llama3.1-8b",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "Qwen/Qwen2.5-7B": "qwen2.5-7b",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b",
}
# Training questions: the toy fixture (always present, no network); prompt length is the template's.
DATA_DIR, DATA_NAME = "tests/fixtures/toyqa", "mini_train"
NO_GPU = ("benchmarks/run_gpu.py needs a CUDA GPU and none is available here (torch.cuda.is_available() is "
          "False). Nothing was measured. `--dry-run` shows what would run.")


class BenchmarkSetupError(ValueError):
    """The recipe or architecture cannot be benchmarked as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# Architecture and parameter count (no weights)
# --------------------------------------------------------------------------------------------------


def architecture_for(model: str, override: str | None = None) -> tuple[str, dict[str, Any]]:
    """(name, config dict) of a recipe's model, from configs/architectures/."""
    name = override or ARCHITECTURES.get(model)
    if name is None:
        raise BenchmarkSetupError(f"no architecture file for model {model!r}; known: {sorted(ARCHITECTURES)}. "
                                  f"Write its config.json to {ARCH_DIR}/<name>.json and pass --architecture <name>")
    path = ARCH_DIR / f"{name}.json"
    if not path.is_file():
        raise BenchmarkSetupError(f"{path} does not exist; known: {sorted(p.stem for p in ARCH_DIR.glob('*.json'))}")
    return name, json.loads(path.read_text())


def count_parameters(cfg: dict[str, Any]) -> int:
    """Parameters of a Llama/Qwen2-family decoder from its config alone.

    Embeddings, per layer (q/k/v/o projections with Qwen2's q/k/v biases, the gated MLP, two RMSNorms),
    the final norm, and the LM head unless tied to the embeddings.
    """
    kind = cfg.get("model_type")
    if kind not in ("llama", "qwen2"):
        raise BenchmarkSetupError(f"count_parameters knows llama and qwen2 configs, got model_type {kind!r}")
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or h // heads
    q, kvd = heads * head_dim, kv * head_dim
    qkv_bias = kind == "qwen2" or cfg.get("attention_bias", False)
    o_bias = cfg.get("attention_bias", False) and kind == "llama"
    attn = h * q + 2 * h * kvd + q * h + (q + 2 * kvd if qkv_bias else 0) + (h if o_bias else 0)
    mlp = 3 * h * inter + ((2 * inter + h) if cfg.get("mlp_bias", False) else 0)
    layer = attn + mlp + 2 * h
    head = 0 if cfg.get("tie_word_embeddings", False) else vocab * h
    return vocab * h + cfg["num_hidden_layers"] * layer + h + head


# --------------------------------------------------------------------------------------------------
# The run's params: the recipe, with the listed overrides
# --------------------------------------------------------------------------------------------------


def bench_params(recipe: str, *, model_dir: str, backend: str, steps: int, tokens: str | int, vllm: str,
                 device: str = "cuda"):
    """(Params, overrides) for one backend's benchmark run of `recipe` (`device` "cpu": the acceptance
    run's CPU rehearsal, fp32)."""
    from medr1.config import load_params

    base = load_params(REPO / recipe)
    overrides = {
        "model": model_dir, "device": device, "backend": backend,
        "torch_dtype": "bfloat16" if device == "cuda" else "float32",
        "max_steps": steps, "save_steps": max(steps, 1), "force": True, "run_name": f"bench-{backend}",
        "train_sources": [DATA_NAME], "data_dir": DATA_DIR, "decontaminate_against": [], "train_limit": None,
        "num_processes": 1, "deepspeed": "none", "merge_adapter": False,
    }
    if tokens != "recipe":
        overrides["max_completion_length"] = int(tokens)
    if vllm != "recipe":
        overrides["use_vllm"] = False
    params = base.replace(**overrides)
    return params.__class__.from_dict(params.to_dict()), {k: v for k, v in overrides.items()
                                                          if getattr(base, k) != v and k != "model"}


# GRPOConfig fields the benchmark sets beyond the recipe (no checkpoints or TensorBoard inside a timing).
TRAINER_OVERRIDES = {"save_strategy": "no", "report_to": [], "logging_steps": 1}


def dry_run(args) -> dict[str, Any]:
    from medr1.config import load_params
    from medr1.train.trainer import grpo_config_kwargs

    recipe = load_params(REPO / args.recipe)
    name, cfg = architecture_for(recipe.model, args.architecture)
    params, overrides = bench_params(args.recipe, model_dir="<random weights>", backend=args.backends.split(",")[0],
                                     steps=args.warmup + args.steps, tokens=args.tokens, vllm=args.vllm)
    grpo = {**grpo_config_kwargs(params, "<tmp>", cuda=True, dtype_name="bfloat16"), **TRAINER_OVERRIDES}
    return {"recipe": args.recipe, "model": recipe.model, "architecture": name,
            "params_b": round(count_parameters(cfg) / 1e9, 3), "backends": args.backends.split(","),
            "warmup_steps": args.warmup, "measured_steps": args.steps, "overrides": overrides, "grpo_config": grpo}


# --------------------------------------------------------------------------------------------------
# GPU work
# --------------------------------------------------------------------------------------------------


def make_random_model(cfg: dict[str, Any], out: Path) -> None:
    """Save a bf16 model of `cfg`'s shapes with random weights (built on the GPU), and the embedded tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from medr1.models.base import load_tokenizer
    from medr1.models.load import resolve_model_path

    tok = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    values = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    values.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(**values)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()


def grpo_child(args) -> dict[str, Any]:
    """One backend's timed GRPO run in this (child) process."""
    if args.child == "unsloth":
        import unsloth  # noqa: F401  (before transformers/TRL: it patches them)
    import torch
    from datasets import Dataset

    from medr1.data import load_benchmark
    from medr1.generation.hf import eos_ids
    from medr1.models.load import load_policy
    from medr1.task.prompts import build_messages
    from medr1.task.rewards import get_reward_funcs
    from medr1.train.step_timer import StepTimer
    from medr1.train.trainer import build_grpo_config, build_trainer, check_effective_config

    params, overrides = bench_params(args.recipe, model_dir=args.child_model, backend=args.child,
                                     steps=args.warmup + args.steps, tokens=args.tokens, vllm=args.vllm)
    questions = list(load_benchmark(DATA_NAME, split="train", data_dir=REPO / DATA_DIR))
    rows = [{"prompt": build_messages(q, params.prompt_template), "answer": q.answer,
             "options_json": json.dumps(q.options), "id": q.id} for q in questions]
    reward_funcs = get_reward_funcs(list(params.reward_funcs))
    changed: dict = {}
    t_load = time.perf_counter()
    model, tok, peft_config, dtype = load_policy(params, args.child_model, device="cuda", backend=args.child,
                                                 changed=changed)
    with tempfile.TemporaryDirectory() as out_dir:
        config = build_grpo_config(params, out_dir, cuda=True, dtype_name=dtype, changed=changed, **TRAINER_OVERRIDES)
        timer = StepTimer()
        trainer = build_trainer(params, model=model, tokenizer=tok, peft_config=peft_config, config=config,
                                reward_funcs=reward_funcs, train_dataset=Dataset.from_list(rows), callbacks=[timer],
                                changed=changed)
        load_s = time.perf_counter() - t_load
        effective, differences = check_effective_config(params, trainer, len(reward_funcs))
        timer.wrap_generation(trainer)
        torch.cuda.reset_peak_memory_stats()
        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        with suppress_eos(base, eos_ids(trainer.model, tok)):
            trainer.train()
    return {"backend": args.child, **timer.summary(warmup=args.warmup),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "load_s": load_s, "steps": timer.steps,
            "effective_grpo_config": effective, "grpo_config_differences": differences,
            "grpo_config_set_back": changed, "overrides": overrides}


def bench_generation(model_dir: str, prompts_n: int, tokens: int, *, device: str = "cuda",
                     decodes: tuple[str, ...] = ("hf", "compact", "static"), vllm: bool | None = None) -> dict[str, Any]:
    """Greedy: model.generate vs compact loop vs static cache + torch.compile (+ vLLM when installed, or
    when `vllm` says so)."""
    import torch

    from medr1.data import load_benchmark
    from medr1.generation.hf import eos_ids, generate
    from medr1.generation.vllm import generate_vllm, vllm_available
    from medr1.models.load import load_model
    from medr1.task.prompts import build_messages

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    qs = list(load_benchmark(DATA_NAME, split="train", data_dir=REPO / DATA_DIR))[:prompts_n]
    prompts = [build_messages(q, "letter") for q in qs]
    model, tok = load_model(model_dir, device=device, torch_dtype="bfloat16" if cuda else "float32")
    out: dict[str, Any] = {"prompts": len(prompts), "tokens": tokens}
    texts = {}
    with suppress_eos(model, eos_ids(model, tok)):
        for decode in decodes:
            generate(model, tok, prompts, max_new_tokens=8, batch_size=len(prompts), decode=decode)  # warm-up/compile
            sync()
            t0 = time.perf_counter()
            gens = generate(model, tok, prompts, max_new_tokens=tokens, batch_size=len(prompts), decode=decode)
            sync()
            out[f"{decode}_s"] = time.perf_counter() - t0
            out[f"{decode}_tok_s"] = sum(sum(g.completion_tokens) for g in gens) / out[f"{decode}_s"]
            texts[decode] = [g.text for g in gens]
    if "static" in texts and "hf" in texts:
        out["static_same_texts_as_hf"] = texts["static"] == texts["hf"]
    if vllm_available() if vllm is None else vllm:
        del model
        torch.cuda.empty_cache()
        t0 = time.perf_counter()
        v = generate_vllm(model_dir, prompts, max_new_tokens=tokens, torch_dtype="bfloat16", gpu_memory_utilization=0.5)
        out["vllm_s_with_start"] = time.perf_counter() - t0
        out["vllm_tok_s"] = sum(sum(g.completion_tokens) for g in v) / v[0].latency_s
    else:
        out["vllm"] = "not installed"
    return out


def run_children(args, model_dir: str, deadline: float) -> dict[str, Any]:
    rows = {}
    for backend in args.backends.split(","):
        left = int(deadline - time.time())
        if left < 30:
            rows[backend] = {"backend": backend, "error": f"not run: the --budget-s {args.budget_s} s was spent"}
            continue
        cmd = [sys.executable, __file__, "--child", backend, "--child-model", model_dir, "--recipe", args.recipe,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--tokens", str(args.tokens),
               "--vllm", args.vllm]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=REPO)
        except subprocess.TimeoutExpired:
            rows[backend] = {"backend": backend, "error": f"stopped after {left} s (budget)"}
            continue
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        rows[backend] = (json.loads(line[7:]) if line else
                         {"backend": backend, "error": (p.stderr.strip().splitlines() or ["no output"])[-1],
                          "stderr_tail": p.stderr[-3000:]})
    done = [r for r in rows.values() if "median_step_s" in r]
    if len(done) == 2:
        a, b = done
        rows["speedup"] = {f"{b['backend']}_over_{a['backend']}": a["median_step_s"] / b["median_step_s"]}
        keys = [k for k in a["effective_grpo_config"] if k not in ("trainer_class",)]
        rows["same_effective_config"] = all(a["effective_grpo_config"][k] == b["effective_grpo_config"].get(k)
                                            for k in keys)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", help="params file whose architecture and GRPO settings run (default "
                        f"{DEFAULT_RECIPE}; with --acceptance the 7B recipe)")
    parser.add_argument("--architecture", help="configs/architectures/<name>.json instead of the recipe's model's")
    parser.add_argument("--backends", default="trl,unsloth")
    parser.add_argument("--only", default="grpo", help="grpo and/or generation, comma-separated")
    parser.add_argument("--steps", type=int, default=2, help="measured optimizer steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out (compilation, allocator)")
    parser.add_argument("--tokens", default="256", help="completion tokens per generation, or 'recipe'")
    parser.add_argument("--vllm", choices=["off", "recipe"], default="off",
                        help="'recipe' keeps the recipe's use_vllm (needs vLLM installed)")
    parser.add_argument("--budget-s", type=int, default=480, help="wall-clock budget of the whole run")
    parser.add_argument("--dry-run", action="store_true", help="print what would run (JSON line); no GPU. "
                        "With --acceptance: rehearse the acceptance run on CPU with a tiny model")
    parser.add_argument("--acceptance", action="store_true",
                        help="device acceptance run (benchmarks/acceptance.py): both backends at the recipe's "
                             "architecture, stale-weights check, static vs HF generation; one JSON")
    parser.add_argument("--out", help="--acceptance: where the JSON goes (default benchmarks/results/)")
    parser.add_argument("--child", choices=["trl", "unsloth"], help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.acceptance:
        import acceptance

        args.recipe = args.recipe or acceptance.ACCEPTANCE_RECIPE
        if args.child:
            print("RESULT " + json.dumps(acceptance.child(args.child, args.child_model, args.recipe, args.device,
                                                          args.vllm == "recipe"), default=str))
            return 0
        return acceptance.run(args)
    args.recipe = args.recipe or DEFAULT_RECIPE
    if args.tokens != "recipe" and not args.tokens.isdigit():
        parser.error(f"--tokens must be a number or 'recipe', got {args.tokens!r}")

    try:
        plan = dry_run(args)
    except BenchmarkSetupError as e:
        print(f"run_gpu.py: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(plan, default=str))
        return 0

    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.child:
        print("RESULT " + json.dumps(grpo_child(args), default=str))
        return 0
    start = time.time()
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "plan": plan, "load_before": os.getloadavg()}
    _, cfg = architecture_for(plan["model"], args.architecture)
    tmp = Path(tempfile.mkdtemp(prefix="medr1-bench-"))
    try:
        t0 = time.perf_counter()
        make_random_model(cfg, tmp)
        results["make_model_s"] = time.perf_counter() - t0
        only = set(args.only.split(","))
        if "grpo" in only:
            results["grpo"] = rows = run_children(args, str(tmp), start + args.budget_s)
            print(format_table(f"GRPO step, {plan['architecture']} ({plan['params_b']} B, random weights), "
                               f"{args.recipe}, {args.tokens} tokens", [rows[b] for b in args.backends.split(",")],
                               ["backend", "median_step_s", "generation_share", "first_step_s", "peak_memory_gib",
                                "measured_steps", "error"]))
        if "generation" in only:
            results["generation"] = g = bench_generation(str(tmp), 16, 128)
            print(format_table("greedy generation, 16 prompts x 128 tokens", [g],
                               ["hf_tok_s", "compact_tok_s", "static_tok_s", "static_same_texts_as_hf"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    results["wall_s"] = time.time() - start
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
