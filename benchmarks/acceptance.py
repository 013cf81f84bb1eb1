"""Device acceptance run (`benchmarks/run_gpu.py --acceptance`): does the paper-scale GPU path work on this
machine, in at most 8 minutes on one GPU, with random weights?

Why: most machines that build medr1 have no GPU, and the GPU code is checked on CPU against the libraries'
signatures (tests/test_contracts.py). What only a GPU can show is checked here, in one command, one JSON:
1. both backends (TRL, Unsloth) build and run GRPO steps at the recipe's architecture (default the 7B
   recipe, params/qwen2.5-7b-grpo.yaml), with the recipe's vLLM setting when vLLM imports; the step after
   a warm-up step is timed (Unsloth's first step compiles for about a minute: timing it would mis-time the
   backend);
2. the generation engine does not generate from stale weights: the log-probability of one fixed completion
   is read from the engine that generates (vLLM, colocated, with sleep mode; or the policy itself on the
   HF path) right after each generation round, i.e. before any update and after one optimizer step, and
   must change. Colocated vLLM with sleep mode has been reported to wake up with the old weights; then
   the policy changes and the engine's number does not;
3. greedy generation with the static KV cache (+ torch.compile on CUDA) against plain HF `generate`, and
   vLLM when it imports.

The GRPO children differ from the recipe only by what `overrides` lists: random weights, few steps and
tokens, a reward that varies between samples of a random model (the recipe's accuracy and format rewards
are 0 for all of them: zero advantages, no update, and the stale check would be void), a learning rate
large enough that one step moves bf16 weights (1e-2; the recipe's is far below one bf16 ulp of a random
weight), and `vllm_enable_sleep_mode` on.

`--acceptance --dry-run` rehearses the same path on CPU (tests/test_gpu_benchmark.py): a tiny model of the
recipe's architecture family, the TRL backend with HF generation, static vs HF generation; the GPU-only
sections are written as skipped, with the reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run_gpu
from run_cpu import machine, suppress_eos

ACCEPTANCE_RECIPE = "params/qwen2.5-7b-grpo.yaml"
# Wall-clock budget of the whole run, and the time kept back for each later section (seconds, one H100,
# estimates): the TRL child (7B load + vLLM engine + 2 steps), the Unsloth child (import, load + engine,
# ~70 s compile on the first step, one timed step), generation (the static path compiles on its first
# batch). A section may use what the earlier ones left; model creation (~1 min) comes first.
BUDGET_S = 480
SECTION_S = {"trl": 150, "unsloth": 180, "generation": 90}


def time_left_for(section: str, deadline: float) -> int:
    """Seconds `section` may run: what is left before `deadline`, minus the shares of the sections after it."""
    later = list(SECTION_S)[list(SECTION_S).index(section) + 1:]
    return int(deadline - time.time()) - sum(SECTION_S[s] for s in later)
STEPS, TOKENS, LEARNING_RATE = 2, 64, 1e-2
# The CPU rehearsal runs the same code on small groups and short completions (seconds per step, not minutes).
CPU_SHAPE = {"num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
CPU_TOKENS = 8
# GRPOConfig fields the acceptance run sets beyond run_gpu.TRAINER_OVERRIDES when vLLM generates.
VLLM_CONFIG_OVERRIDES = {"vllm_enable_sleep_mode": True}
# The fixed completion whose log-probability is read after each generation round.
PROBE_COMPLETION = " The answer is (B). It is the most likely option."
# A tiny model of the recipe's family for the CPU rehearsal: milliseconds per step.
TINY_SHAPES = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, max_position_embeddings=2048)


def distinct_characters(completions, **kwargs) -> list[float]:
    """Reward varying between samples of a random model (so the group advantages and the update are not zero)."""
    from medr1.task.rewards import completion_text

    return [len(set(completion_text(c))) / 10 for c in completions]


# --------------------------------------------------------------------------------------------------
# The log-probability probe
# --------------------------------------------------------------------------------------------------


def _vllm_engine(trainer):
    """The colocated vLLM engine the trainer generates with (TRL 1.15 `vllm_generation.llm`; Unsloth puts its
    own `model.vllm_engine` there), or None on the HF path."""
    if not getattr(trainer.args, "use_vllm", False):
        return None
    holder = getattr(trainer, "vllm_generation", None)
    return getattr(holder, "llm", None) or getattr(trainer, "llm", None) or getattr(trainer.model, "vllm_engine", None)


def policy_logprob(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Sum of log p(completion | prompt) under the policy (eval mode: no dropout), float64."""
    import torch

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = torch.tensor([prompt_ids + completion_ids], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].double()
        picked = torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt_ids):, None].to(logits.device))
        return float(picked.sum())
    finally:
        model.train(was_training)


def engine_logprob(llm, prompt_ids: list[int], completion_ids: list[int], lora_request=None) -> float:
    """Sum of log p(completion | prompt) under a vLLM engine, from its prompt log-probabilities."""
    from vllm import SamplingParams

    out = llm.generate([{"prompt_token_ids": prompt_ids + completion_ids}],
                       SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0), use_tqdm=False,
                       lora_request=lora_request)[0]
    rows = out.prompt_logprobs[len(prompt_ids):]
    return float(sum(row[token].logprob for row, token in zip(rows, completion_ids, strict=True)))


class LogprobProbe:
    """Records, after each generation round, the fixed completion's log-probability under the generating
    engine and under the policy, with the trainer's step.

    vLLM: the engine's `generate` is wrapped; the probe runs right after TRL's (or Unsloth's) call, while the
    engine is awake and holds the weights it generated with, and with the same `lora_request`. HF path:
    the trainer's generation method is wrapped and the policy is the engine.
    """

    def __init__(self, trainer, prompt_ids: list[int], completion_ids: list[int]):
        self.trainer, self.prompt_ids, self.completion_ids = trainer, prompt_ids, completion_ids
        self.records: list[dict[str, Any]] = []
        self.llm = _vllm_engine(trainer)
        if self.llm is not None:
            original = self.llm.generate

            def generate(*args, **kwargs):
                out = original(*args, **kwargs)
                if not self._busy:
                    self._record(kwargs.get("lora_request"))
                return out

            self.engine = "vllm"
            self.llm.generate = generate
        else:
            name = "_generate_single_turn" if hasattr(trainer, "_generate_single_turn") else "_generate"
            original = getattr(trainer, name)

            def generate(*args, **kwargs):
                out = original(*args, **kwargs)
                self._record(None)
                return out

            self.engine = "policy (HF generation)"
            setattr(trainer, name, generate)
        self._busy = False

    def _record(self, lora_request) -> None:
        self._busy = True
        row: dict[str, Any] = {"step": self.trainer.state.global_step}
        # Each read on its own: a failure is recorded in the JSON and the training step goes on.
        try:
            row["policy"] = policy_logprob(self.trainer.model, self.prompt_ids, self.completion_ids)
        except Exception as e:  # noqa: BLE001
            row["policy_error"] = f"{type(e).__name__}: {e}"
        try:
            row["engine"] = (engine_logprob(self.llm, self.prompt_ids, self.completion_ids, lora_request)
                             if self.llm is not None else row["policy"])
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"
        finally:
            self._busy = False
        self.records.append(row)

    def verdict(self, tolerance: float = 1e-3) -> dict[str, Any]:
        """Did the engine's log-probability change after the first optimizer step (and the policy's)?"""
        ok = [r for r in self.records if "error" not in r]
        out: dict[str, Any] = {"engine": self.engine, "records": self.records, "tolerance": tolerance}
        first = next((r for r in ok if r["step"] == 0), None)
        later = next((r for r in ok if r["step"] >= 1), None)
        if first is None or later is None:
            out["engine_changed"] = None
            out["why"] = "needs a generation round before and one after the first optimizer step"
            return out
        out["engine_delta"] = later["engine"] - first["engine"]
        out["engine_changed"] = abs(out["engine_delta"]) > tolerance
        if "policy" in first and "policy" in later:  # the policy's own number (informative; may fail on Unsloth)
            out["policy_delta"] = later["policy"] - first["policy"]
            out["policy_changed"] = abs(out["policy_delta"]) > tolerance
            out["engine_minus_policy"] = later["engine"] - later["policy"]
        out["stale_weights"] = not out["engine_changed"]
        return out


# --------------------------------------------------------------------------------------------------
# One backend, in its own process (Unsloth patches transformers and TRL on import)
# --------------------------------------------------------------------------------------------------


def child(backend: str, model_dir: str, recipe: str, device: str, use_vllm: bool) -> dict[str, Any]:
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers/TRL: it patches them)
    import torch
    from datasets import Dataset

    from medr1.data import load_benchmark
    from medr1.generation.hf import encode_prompts, eos_ids
    from medr1.models.base import text_tokenizer
    from medr1.models.load import load_policy
    from medr1.task.prompts import build_messages
    from medr1.train.step_timer import StepTimer
    from medr1.train.trainer import build_grpo_config, build_trainer, check_effective_config

    cuda = device == "cuda"
    params, overrides = run_gpu.bench_params(recipe, model_dir=model_dir, backend=backend, steps=STEPS,
                                             tokens=TOKENS if cuda else CPU_TOKENS,
                                             vllm="recipe" if use_vllm else "off", device=device)
    # warmup 0: with the recipe's warm-up ratio the first of two steps would run at learning rate 0.
    extra = {"learning_rate": LEARNING_RATE, "warmup_ratio": 0.0, "reward_weights": None, **({} if cuda else CPU_SHAPE)}
    params = params.replace(**extra)
    overrides.update(extra, reward_funcs=["distinct_characters"])
    questions = list(load_benchmark(run_gpu.DATA_NAME, split="train", data_dir=run_gpu.REPO / run_gpu.DATA_DIR))
    rows = [{"prompt": build_messages(q, params.prompt_template), "answer": q.answer,
             "options_json": json.dumps(q.options), "id": q.id} for q in questions]
    changed: dict = {}
    t0 = time.perf_counter()
    model, tok, peft_config, dtype = load_policy(params, model_dir, device=device, backend=backend, changed=changed)
    sleep = dict(VLLM_CONFIG_OVERRIDES) if params.use_vllm else {}
    overrides.update(sleep)
    with tempfile.TemporaryDirectory() as out_dir:
        config = build_grpo_config(params, out_dir, cuda=cuda, dtype_name=dtype, changed=changed,
                                   **run_gpu.TRAINER_OVERRIDES, **sleep)
        timer = StepTimer() if cuda else StepTimer(synchronize=lambda: None)
        trainer = build_trainer(params, model=model, tokenizer=tok, peft_config=peft_config, config=config,
                                reward_funcs=[distinct_characters], train_dataset=Dataset.from_list(rows),
                                callbacks=[timer], changed=changed)
        load_s = time.perf_counter() - t0
        effective, differences = check_effective_config(params, trainer, 1)
        text_tok = text_tokenizer(tok)
        prompt_ids = list(encode_prompts(text_tok, [rows[0]["prompt"]])[0])
        completion_ids = text_tok(PROBE_COMPLETION, add_special_tokens=False)["input_ids"]
        probe = LogprobProbe(trainer, prompt_ids, completion_ids)
        timer.wrap_generation(trainer)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        with suppress_eos(base, eos_ids(trainer.model, tok)):
            trainer.train()
    return {"backend": backend, **timer.summary(warmup=1), "steps": timer.steps, "load_s": load_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "use_vllm": params.use_vllm, "logprob_probe": probe.verdict(), "effective_grpo_config": effective,
            "grpo_config_differences": differences, "grpo_config_set_back": changed, "overrides": overrides}


def run_child(backend: str, model_dir: str, args, device: str, use_vllm: bool, limit_s: int) -> dict[str, Any]:
    """Run `child` in a subprocess, stopped after `limit_s`; its result, or an error row that says why."""
    if limit_s < 30:
        return {"backend": backend, "error": f"not run: the {args.budget_s} s budget was spent"}
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "run_gpu.py"), "--acceptance", "--child", backend,
           "--child-model", model_dir, "--recipe", args.recipe, "--device", device,
           "--vllm", "recipe" if use_vllm else "off"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, cwd=run_gpu.REPO)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "error": f"stopped after {limit_s} s (its share of the budget)"}
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line:
        return json.loads(line[7:])
    return {"backend": backend, "error": (p.stderr.strip().splitlines() or ["no output"])[-1],
            "stderr_tail": p.stderr[-3000:]}


# --------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------


def make_tiny_model(cfg: dict[str, Any], out: Path) -> None:
    """The recipe's model family at toy size (float32, CPU), with the embedded tokenizer: the CPU rehearsal."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from medr1.models.base import load_tokenizer
    from medr1.models.load import resolve_model_path

    tok = load_tokenizer(resolve_model_path("embedded:smollm2-135m"))
    values = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    values.update(TINY_SHAPES, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**values))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)


def vllm_importable() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001  (any import failure means: no vLLM section)
        return False
    return True


def checks(result: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Pass/fail of each acceptance item, and `passed` over those that apply here (None: not applicable)."""
    out: dict[str, Any] = {}
    for backend in ("trl", "unsloth"):
        row = result["backends"].get(backend, {})
        if row.get("skipped"):
            out[f"{backend}_steps_ran"] = out[f"{backend}_engine_not_stale"] = None
            continue
        out[f"{backend}_steps_ran"] = len(row.get("steps", [])) == STEPS
        out[f"{backend}_engine_not_stale"] = (row.get("logprob_probe") or {}).get("engine_changed")
    gen = result.get("generation", {})
    if "static_same_texts_as_hf" in gen:
        out["static_same_texts_as_hf"] = gen["static_same_texts_as_hf"]
        out["static_faster_than_hf"] = gen["static_s"] < gen["hf_s"] if cuda else None  # no compile on CPU
    else:
        out["static_same_texts_as_hf"] = out["static_faster_than_hf"] = False
    decided = [v for v in out.values() if v is not None]
    out["passed"] = bool(decided) and all(decided)
    return out


def run(args) -> int:
    """`run_gpu.py --acceptance [--dry-run]`: every section, one JSON (`--out`, default benchmarks/results/)."""
    import torch

    from medr1.config import load_params

    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        print(run_gpu.NO_GPU, file=sys.stderr)
        return 2
    start = time.time()
    deadline = start + args.budget_s
    recipe = load_params(run_gpu.REPO / args.recipe)
    name, cfg = run_gpu.architecture_for(recipe.model, args.architecture)
    has_vllm = cuda and vllm_importable()
    result: dict[str, Any] = {
        "acceptance": True, "device": "cuda" if cuda else "cpu (dry run: tiny model, GPU sections skipped)",
        "machine": machine(), "recipe": args.recipe, "model": recipe.model, "architecture": name,
        "params_b": round(run_gpu.count_parameters(cfg) / 1e9, 3) if cuda else None,
        "weights": "random", "budget_s": args.budget_s, "load_before": os.getloadavg(),
        "vllm": "imports: the children use the recipe's use_vllm" if has_vllm else
        ("not importable here: no vLLM section" if cuda else "skipped on CPU (vLLM needs CUDA)"),
        "backends": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="medr1-accept-"))
    try:
        t0 = time.perf_counter()
        run_gpu.make_random_model(cfg, tmp) if cuda else make_tiny_model(cfg, tmp)
        result["make_model_s"] = time.perf_counter() - t0
        device = "cuda" if cuda else "cpu"
        for backend in ("trl", "unsloth"):
            if backend == "unsloth" and not cuda:
                result["backends"][backend] = {"backend": backend, "skipped": "Unsloth imports only with CUDA"}
                continue
            limit = time_left_for(backend, deadline)
            result["backends"][backend] = run_child(backend, str(tmp), args, device, has_vllm, limit)
        if time_left_for("generation", deadline) < 30:
            result["generation"] = {"error": f"not run: the {args.budget_s} s budget was spent"}
        else:
            result["generation"] = run_gpu.bench_generation(str(tmp), 8, 32 if cuda else 8, device=device,
                                                            decodes=("hf", "static"), vllm=has_vllm)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["checks"] = checks(result, cuda)
    result["wall_s"] = time.time() - start
    result["within_budget"] = result["wall_s"] <= args.budget_s
    result["load_after"] = os.getloadavg()
    path = Path(args.out) if args.out else run_gpu.RESULTS_DIR / f"acceptance-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_json_default))
    print(json.dumps(result["checks"]))
    print(f"wrote {path}")
    return 0 if result["checks"]["passed"] else 1


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
