"""Run parameters: one flat dataclass, loaded from YAML, validated before any model is loaded.

Flat (not nested) on purpose: papermill injects YAML keys as notebook variables, so a params file, the
notebooks' `parameters` cells and `medr1 train --set key=value` all speak the same names. Every field
carries a `help` text (shown by `medr1 params --help`-style listings) and a `section` used to group
the YAML. Validation fails fast and names the key, the value and what is allowed, because a typo in a
GPU recipe should cost a second, not a night.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medr1.data import FIT_BENCHMARK
from medr1.models.vision import is_vision_spec
from medr1.paths import resolve_repo_path
from medr1.task.prompts import TEMPLATES, check_rewards_fit
from medr1.task.protocols import PROTOCOLS
from medr1.task.rewards import GOLD_READING_REWARDS, validate_reward_config


class ParamsError(ValueError):
    """A params file or override is wrong; the message names the key and what is allowed."""


def _f(default, help: str, section: str, choices: tuple | None = None):
    meta = {"help": help, "section": section}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


BACKENDS = ("auto", "trl", "unsloth")
EVAL_BACKENDS = ("auto", "hf", "vllm")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
DEEPSPEED = ("none", "zero2", "zero3")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
DEVICES = ("auto", "cpu", "cuda")
SCALE_REWARDS = ("group", "batch", "none")
IS_LEVELS = ("token", "sequence")
VLLM_MODES = ("colocate", "server")
EVAL_DECODES = ("compact", "hf", "static")
REWARD_CONTROLS = ("none", "random")
# transformers' OptimizerNames that fit LoRA GRPO; 8-bit ones need bitsandbytes (the gpu extra).
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
VLLM_IS_MODES = ("sequence_mask", "sequence_truncate", "token_mask", "token_truncate")


@dataclass
class Params:
    # --- run -------------------------------------------------------------------------------------
    run_name: str = _f("demo", "Name of the run directory under runs_dir.", "run")
    runs_dir: str = _f("runs", "Where run directories live (relative to the repo root).", "run")
    seed: int = _f(42, "Seed for data shuffling, sampling and training.", "run")
    device: str = _f("auto", "auto picks CUDA when present, else CPU.", "run", DEVICES)
    resume: bool = _f(True, "Continue an interrupted run from its last complete checkpoint / prediction.", "run")
    force: bool = _f(False, "Start over: delete the run's previous artifacts first.", "run")
    # --- data ------------------------------------------------------------------------------------
    data_dir: str | None = _f(None, "Benchmark directory; else $MEDR1_DATA_DIR, ../shared/benchmarks, the hub.", "data")
    train_sources: list = _f(["pubmedqa", "afrimedqa"], "Benchmarks whose train split forms the training pool.", "data")
    train_limit: int | None = _f(None, "Keep at most this many training questions (after decontamination).", "data")
    validation_size: int = _f(0, "Hold out this many questions of the decontaminated, shuffled training pool as a "
                              "validation split for tuning (training never sees them; written to "
                              "data/validation/validation.jsonl, benchmark 'validation' with data_dir = runs/<run>/data).",
                              "data")
    decontaminate_against: list = _f(
        ["medqa", "medqa_5options", "medmcqa", "pubmedqa", "mmlu", "mmlu-pro", "pubmedqa-pqal"],
        "Evaluation sets whose test questions must never reach training.", "data")
    ngram_size: int = _f(13, "Word n-gram length for overlap decontamination.", "data")
    shuffle_options: bool = _f(True, "Permute each training draw's options, gold letters balanced (see "
                               "medr1.data.option_order), so that no fixed letter earns reward.", "data")
    validation_every: int = _f(0, "Every N optimizer steps (and at the last), decode the validation split greedily as "
                               "evaluation will and log it to train/validation.csv (medr1.train.validation); "
                               "0 = never. Needs validation_size > 0.", "data")
    select_checkpoint: str = _f("last", "Which adapter the run keeps: the last step's, or the best validated step's "
                                "(rule in medr1.train.validation.selection_key; validation questions only).",
                                "data", choices=("last", "validation"))
    fit_check: bool = _f(False, "Positive control: evaluate the training questions themselves (benchmark 'fit', "
                         "labelled 'fit check: training questions, not generalization') under option rotations "
                         "0..eval_permutations-1, which training then never uses (medr1.option_order); questions "
                         "that cannot be reordered are left out of the pool.", "data")
    train_option_counts: list = _f([], "Cut each training draw to an option count dealt from this list (gold kept, "
                                   "distractors dropped at random; medr1.data.option_order.vary_option_counts), so the "
                                   "letter ranges the evaluation asks with are trained too; [] = as written.", "data")
    prefilter_samples: int = _f(0, "k > 0: keep the training questions the starting policy answers right in some "
                                "but not all of k samples (medr1.train.prefilter); 0 = off.", "data")
    validation_option_counts: list | None = _f(None, "Cut validation questions to option counts dealt from this list "
                                               "(the test sets' counts: a model's letter and format habits differ "
                                               "by option count; questions with fewer options than the smallest "
                                               "count are not asked); None = train_option_counts.", "data")
    # --- prompts and rewards ---------------------------------------------------------------------
    prompt_template: str = _f("r1", "Prompt template name for training (see medr1.task.prompts.TEMPLATES).", "prompt")
    reward_funcs: list = _f(["accuracy", "format"], "Reward function names (see medr1.task.rewards.REWARD_FUNCS).", "prompt")
    reward_weights: list | None = _f(None, "One weight per reward function; None = all 1.", "prompt")
    reward_control: str = _f("none", "random: the negative control, rewards see a seeded random letter per training "
                             "question for the gold one (medr1.task.rewards.control_labels).", "prompt", REWARD_CONTROLS)
    # --- model -----------------------------------------------------------------------------------
    model: str = _f("embedded:smollm2-135m", "Hub id, local path, or embedded:<name>.", "model")
    backend: str = _f("auto", "auto: unsloth for one process with a CUDA GPU and the package, else trl.", "model", BACKENDS)
    torch_dtype: str = _f("auto", "auto: bfloat16 on GPU, float32 on CPU.", "model", ("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = _f(False, "Run code shipped with a hub model. Off unless you trust the repo.", "model")
    load_in_4bit: bool = _f(False, "QLoRA through Unsloth/bitsandbytes (GPU only).", "model")
    image_max_pixels: int | None = _f(None, "Vision models: pixels per image at most (Qwen2-VL's max_pixels; "
                                      "each 28x28 block is one prompt token), in training and evaluation (HF "
                                      "and vLLM). None: the processor's default.", "model")
    # --- LoRA ------------------------------------------------------------------------------------
    lora_r: int = _f(8, "LoRA rank.", "lora")
    lora_alpha: int = _f(16, "LoRA alpha.", "lora")
    lora_dropout: float = _f(0.0, "LoRA dropout.", "lora")
    lora_target_modules: list = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "Modules to adapt.", "lora")
    lora_vision: bool = _f(False, "Vision models: also adapt the vision tower (default: LoRA on the language "
                           "model only, the vision tower frozen, as in MedVLM-R1).", "lora")
    # --- GRPO ------------------------------------------------------------------------------------
    learning_rate: float = _f(1e-5, "Peak learning rate.", "grpo")
    lr_scheduler_type: str = _f("constant_with_warmup", "Learning-rate schedule.", "grpo", SCHEDULERS)
    warmup_ratio: float = _f(0.0, "Fraction of steps spent warming up.", "grpo")
    weight_decay: float = _f(0.0, "AdamW weight decay.", "grpo")
    max_grad_norm: float = _f(1.0, "Gradient clipping.", "grpo")
    num_generations: int = _f(8, "Completions sampled per prompt (the GRPO group).", "grpo")
    per_device_train_batch_size: int = _f(8, "Completions per device per step; a multiple of num_generations.", "grpo")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.", "grpo")
    max_prompt_length: int = _f(1024, "Prompts longer than this (tokens) are skipped and counted.", "grpo")
    max_completion_length: int = _f(1024, "Maximum new tokens per completion.", "grpo")
    temperature: float = _f(1.0, "Sampling temperature for GRPO generations.", "grpo")
    top_p: float = _f(1.0, "Nucleus sampling for GRPO generations.", "grpo")
    beta: float = _f(0.0, "KL coefficient (0 skips the reference model, as in DAPO/Dr.GRPO).", "grpo")
    loss_type: str = _f("dapo", "GRPO loss normalisation.", "grpo", LOSS_TYPES)
    # The algorithm knobs a backend may change on its own (Unsloth sets mask_truncated_completions and
    # epsilon_high for loss_type dapo): one value each, passed to and re-asserted on every backend
    # (medr1.train.trainer), and read back into manifest.json as effective_grpo_config.
    epsilon: float = _f(0.2, "Lower clip range of the policy ratio (1 - epsilon).", "grpo")
    epsilon_high: float | None = _f(None, "Upper clip range (1 + epsilon_high); null = epsilon. DAPO's clip-higher: 0.28.", "grpo")
    mask_truncated_completions: bool = _f(False, "Leave completions cut at max_completion_length out of the loss (DAPO).", "grpo")
    scale_rewards: str = _f("group", "Divide advantages by the reward std of the group, the batch, or not at all (Dr. GRPO: none).", "grpo", SCALE_REWARDS)
    importance_sampling_level: str = _f("token", "Policy ratio per token (GRPO) or per sequence (GSPO).", "grpo", IS_LEVELS)
    num_iterations: int = _f(1, "Optimisation passes over each generation batch (GRPO's mu).", "grpo")
    pad_token: str | None = _f(None, "Padding token; null = the tokenizer's own, else its EOS (same on every backend).", "grpo")
    max_steps: int = _f(100, "Optimizer steps (-1: use num_train_epochs).", "grpo")
    num_train_epochs: float = _f(1.0, "Epochs when max_steps is -1.", "grpo")
    save_steps: int = _f(25, "Checkpoint every N steps (resume point).", "grpo")
    save_total_limit: int | None = _f(3, "Keep this many checkpoints.", "grpo")
    logging_steps: int = _f(1, "Log metrics every N steps.", "grpo")
    sample_every: int = _f(10, "Write sampled completions every N steps.", "grpo")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory (GPU recipes).", "grpo")
    use_vllm: bool = _f(False, "Generate with vLLM (GPU only).", "grpo")
    vllm_mode: str = _f("colocate", "colocate: vLLM in the training process; server: a `trl vllm-serve` you started.", "grpo", VLLM_MODES)
    vllm_gpu_memory_utilization: float = _f(0.3, "GPU memory share vLLM reserves (colocate mode and Unsloth).", "grpo")
    # Unsloth's GRPOConfig defaults these to 8-bit AdamW and no correction, TRL's to fused AdamW and a
    # sequence-masked correction capped at 3: passed explicitly so that the backend does not pick the algorithm.
    optim: str = _f("adamw_torch_fused", "Optimizer (transformers' `optim`), the same on every backend.", "grpo", OPTIMIZERS)
    vllm_importance_sampling_correction: bool = _f(True, "With use_vllm: weight the loss by the ratio of the policy's "
                                                   "to vLLM's probability of each sampled completion (the two "
                                                   "engines' numerics differ; TRL's correction).", "grpo")
    vllm_importance_sampling_mode: str = _f("sequence_mask", "That ratio per sequence or per token; ratios above the "
                                            "cap are masked out (zero) or truncated to the cap.", "grpo", VLLM_IS_MODES)
    vllm_importance_sampling_clip_max: float = _f(3.0, "The cap of that ratio (TRL's C_max).", "grpo")
    num_processes: int = _f(1, "GPUs to use; >1 launches accelerate as a subprocess.", "grpo")
    deepspeed: str = _f("none", "DeepSpeed ZeRO stage for multi-GPU runs.", "grpo", DEEPSPEED)
    merge_adapter: bool = _f(False, "Also export merged full weights at the end of training.", "grpo")
    # --- evaluation ------------------------------------------------------------------------------
    eval_benchmarks: list = _f(["medqa", "pubmedqa"], "Benchmarks to evaluate.", "eval")
    eval_split: str = _f("test", "Split to evaluate.", "eval")
    eval_limit: int | None = _f(None, "N questions of each benchmark, a seeded random subset in file order (None: all).", "eval")
    eval_subset_seed: int | None = _f(None, "Seed of the eval_limit subset (None: seed). A new value draws other test "
                                      "questions without changing training (params/demo.yaml: a subset never used "
                                      "while tuning).", "eval")
    eval_prompt_template: str = _f("r1", "Prompt template for evaluation.", "eval")
    eval_backend: str = _f("auto", "Generation backend: auto picks vllm on GPU when installed, else hf.", "eval", EVAL_BACKENDS)
    eval_batch_size: int = _f(16, "Prompts per generation batch (hf backend).", "eval")
    eval_decode: str = _f("compact", "hf backend loop: compact (drops finished rows), hf (model.generate), static (static KV cache + torch.compile on CUDA).", "eval", EVAL_DECODES)
    eval_max_new_tokens: int = _f(1024, "Maximum new tokens per answer.", "eval")
    eval_temperature: float = _f(0.0, "0 = greedy.", "eval")
    eval_top_p: float = _f(1.0, "Nucleus sampling when temperature > 0.", "eval")
    eval_num_samples: int = _f(1, "Samples per question; >1 adds a majority-vote score.", "eval")
    eval_permutations: int = _f(1, "Ask each question K times, options rotated by 0..K-1 (K > 1 reports "
                                "consistent_accuracy and letter-bias measures).", "eval")
    eval_scorers: list = _f(["strict", "huatuo"], "Scorers reported side by side.", "eval")
    eval_models: list = _f(["base", "trained"], "base = params.model; trained = base + this run's adapter; or specs.", "eval")
    eval_protocol: list = _f(["medr1"], "Evaluation protocols (medr1.task.protocols): medr1 = the eval_* params into "
                             "eval/<label>; huatuo-o1[-strict] = HuatuoGPT-o1's published protocol into "
                             "eval/<label>@<protocol>.", "eval")
    eval_seeds: int = _f(3, "Seeds of a sampled protocol (huatuo-o1); the mean and spread are reported.", "eval")
    eval_data_file: str | None = _f(None, "Your copy of HuatuoGPT-o1's eval_data.json: their sets, exactly.", "eval")
    eval_add_special_tokens: bool = _f(False, "Tokenize the chat-rendered prompt with the tokenizer's special tokens "
                                       "again, as HuatuoGPT-o1's SGLang server did (Llama-3: a second BOS); the "
                                       "huatuo-o1 protocols set it.", "eval")
    # --- report ----------------------------------------------------------------------------------
    reference_results: str | None = _f("params/reference_results.yaml", "Published numbers shown beside ours; null: "
                                       "none (the fit check, whose set no paper reports on).", "report")
    compare_run: str | None = _f(None, "run_name of the other arm (true vs random reward), paired with this run in "
                                 "results.md (medr1.report.results.compare_arms).", "report")

    def __post_init__(self):
        self._check_types()
        self._check_values()

    # -- validation --------------------------------------------------------------------------------
    def _check_types(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = _allowed_types(hints[f.name])
            if bool in allowed and isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            elif float in allowed and isinstance(value, int | str) and not isinstance(value, bool):
                try:
                    value = float(value)
                except ValueError:
                    pass
            elif int in allowed and isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    pass
            if list in allowed and isinstance(value, str) and f.type != "str":
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, tuple(allowed)) or (isinstance(value, bool) and bool not in allowed):
                raise ParamsError(
                    f"param {f.name!r}: expected {_type_name(allowed)}, got {type(value).__name__} {value!r}")
            object.__setattr__(self, f.name, value)

    def _check_values(self):
        def need(cond: bool, key: str, msg: str):
            if not cond:
                raise ParamsError(f"param {key!r} = {getattr(self, key)!r}: {msg}")

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices:
                need(getattr(self, f.name) in choices, f.name, f"must be one of {list(choices)}")
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f.name, "must be a finite number")
        need(bool(self.run_name) and "/" not in self.run_name and ".." not in self.run_name
             and self.run_name.strip() == self.run_name, "run_name",
             "must be a plain directory name (no '/', no '..', no surrounding spaces)")
        need(self.lora_r > 0, "lora_r", "must be > 0")
        need(self.lora_alpha > 0, "lora_alpha", "must be > 0")
        need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        need(bool(self.lora_target_modules), "lora_target_modules", "must name at least one module")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(self.num_generations >= 2, "num_generations",
             "must be >= 2 (GRPO normalises rewards within a group)")
        need(self.per_device_train_batch_size > 0, "per_device_train_batch_size", "must be > 0")
        global_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_processes
        need(global_batch % self.num_generations == 0, "num_generations",
             f"must divide the global batch per_device_train_batch_size x gradient_accumulation_steps x "
             f"num_processes = {global_batch}")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        for key in ("max_prompt_length", "max_completion_length", "eval_max_new_tokens", "ngram_size",
                    "save_steps", "logging_steps", "sample_every", "eval_batch_size", "eval_num_samples",
                    "eval_permutations", "num_processes"):
            need(getattr(self, key) > 0, key, "must be > 0")
        need(self.validation_size >= 0, "validation_size", "must be >= 0")
        need(self.prefilter_samples != 1 and self.prefilter_samples >= 0, "prefilter_samples", "must be 0 or >= 2")
        need(self.reward_control == "none" or bool(set(GOLD_READING_REWARDS) & set(self.reward_funcs)),
             "reward_control", f"changes the gold answer, which only {list(GOLD_READING_REWARDS)} read")
        need(self.compare_run is None or "/" not in self.compare_run and self.compare_run not in ("", self.run_name),
             "compare_run", "must be another run's run_name (a plain directory name, not this run's)")
        need(self.validation_every >= 0, "validation_every", "must be >= 0")
        need(not self.validation_every or self.validation_size > 0, "validation_every",
             "needs a validation split: set validation_size > 0")
        need(self.select_checkpoint == "last" or self.validation_every > 0, "select_checkpoint",
             "'validation' needs validation_every > 0 (and validation_size > 0)")
        def option_counts(counts) -> bool:
            return all(isinstance(k, int) and 2 <= k <= 26 for k in counts)

        need(option_counts(self.train_option_counts), "train_option_counts", "must be option counts between 2 and 26")
        need(self.validation_option_counts is None or option_counts(self.validation_option_counts),
             "validation_option_counts", "must be None or option counts between 2 and 26")
        self._check_fit_check(need)
        need(self.max_steps == -1 or self.max_steps > 0, "max_steps", "must be > 0, or -1 to use num_train_epochs")
        need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self.temperature > 0, "temperature", "must be > 0 (GRPO needs diverse samples)")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(0 < self.eval_top_p <= 1, "eval_top_p", "must be in (0, 1]")
        need(self.eval_temperature >= 0, "eval_temperature", "must be >= 0 (0 = greedy)")
        need(self.beta >= 0, "beta", "must be >= 0")
        need(self.epsilon > 0, "epsilon", "must be > 0")
        need(self.epsilon_high is None or self.epsilon_high > 0, "epsilon_high", "must be > 0 or null (= epsilon)")
        need(self.num_iterations >= 1, "num_iterations", "must be >= 1")
        need(self.pad_token is None or bool(self.pad_token), "pad_token", "must be a token string or null")
        need(0 < self.vllm_gpu_memory_utilization <= 1, "vllm_gpu_memory_utilization", "must be in (0, 1]")
        need(self.vllm_importance_sampling_clip_max > 0, "vllm_importance_sampling_clip_max", "must be > 0")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        for key in ("train_limit", "eval_limit", "save_total_limit", "image_max_pixels"):
            value = getattr(self, key)
            need(value is None or value > 0, key, "must be > 0 or null")
        need(not (self.eval_num_samples > 1 and self.eval_temperature == 0), "eval_num_samples",
             "several samples per question need eval_temperature > 0 (greedy samples are identical)")
        need(bool(self.reward_funcs), "reward_funcs", "must name at least one reward")

        need(bool(self.eval_protocol) and all(p in PROTOCOLS for p in self.eval_protocol), "eval_protocol",
             f"must list protocols among {list(PROTOCOLS)}")
        need(self.eval_seeds >= 1, "eval_seeds", "must be >= 1")
        if self.reward_weights is not None:
            need(len(self.reward_weights) == len(self.reward_funcs), "reward_weights",
                 f"needs one weight per reward function ({len(self.reward_funcs)}: {self.reward_funcs})")
            need(all(isinstance(w, int | float) and math.isfinite(w) for w in self.reward_weights),
                 "reward_weights", "must be finite numbers")
        self._check_template_and_rewards()
        need(not (self.use_vllm and self.device == "cpu"), "use_vllm", "vLLM needs a CUDA GPU; set use_vllm: false")
        # TRL's colocated engine is built from the checkpoint alone (`LLM(model=model.name_or_path, ...)`, no
        # mm_processor_kwargs: trl/generation/vllm_generation.py:347-363, TRL 1.15): it would sample from images
        # at the checkpoint's resolution while the loss scores our capped images, off-policy by construction.
        need(not (self.use_vllm and self.image_max_pixels and is_vision_spec(self.model)), "use_vllm",
             "on a vision model TRL's vLLM engine ignores image_max_pixels (it generates from images at the "
             "checkpoint's resolution); set use_vllm: false (HF generation honours the cap)")
        need(not (self.backend == "unsloth" and self.device == "cpu"), "backend",
             "unsloth needs a CUDA GPU; use backend: trl on CPU")
        need(not (self.deepspeed != "none" and self.num_processes == 1), "deepspeed",
             "DeepSpeed configs are for multi-GPU runs (num_processes > 1)")
        need(not (self.deepspeed != "none" and self.device == "cpu"), "deepspeed",
             "DeepSpeed needs CUDA GPUs; the CPU multi-process test mode (device: cpu) runs deepspeed: none")
        need(not (self.validation_every and self.deepspeed == "zero3"), "validation_every",
             "validation during training decodes on the main process alone, and under ZeRO-3 each forward needs "
             "every process's shard; set validation_every: 0 (evaluate the checkpoints afterwards) or deepspeed: zero2")

    def _check_fit_check(self, need) -> None:
        """The fit check's set is the training pool under held-out rotations: it needs those rotations (K >= 2,
        shuffled training draws), the questions as written (no option cuts) and protocol medr1 only."""
        listed = FIT_BENCHMARK in self.eval_benchmarks
        need(listed or not self.fit_check, "fit_check", f"needs {FIT_BENCHMARK!r} in eval_benchmarks")
        if not (listed or self.fit_check):
            return
        need(self.fit_check, "eval_benchmarks", f"{FIT_BENCHMARK!r} is the fit check's set: set fit_check: true")
        need(self.eval_permutations >= 2, "eval_permutations", "must be >= 2 with fit_check (the held-out rotations)")
        need(self.shuffle_options, "shuffle_options", "must be true with fit_check (unshuffled draws are rotation 0)")
        need(not self.train_option_counts, "train_option_counts",
             "must be [] with fit_check (a cut question is another question than the one evaluated)")
        need(self.eval_protocol == ["medr1"], "eval_protocol", "must be [medr1] with fit_check")
        need(not self.prefilter_samples, "prefilter_samples",
             "must be 0 with fit_check (the fit set is the pool as prepared: a question the pre-filter drops "
             "would still be evaluated, untrained)")

    def _check_template_and_rewards(self):
        """Template and reward names, and whether they fit together, checked here: before any model loads."""

        for key in ("prompt_template", "eval_prompt_template"):
            if getattr(self, key) not in TEMPLATES:
                hint = _closest(getattr(self, key), list(TEMPLATES))
                raise ParamsError(f"param {key!r} = {getattr(self, key)!r}: must be one of {list(TEMPLATES)}"
                                  + (f" (did you mean {hint!r}?)" if hint else ""))
        for key, check in (("reward_funcs", lambda: validate_reward_config(self.reward_funcs, self.reward_weights)),
                           ("reward_funcs", lambda: check_rewards_fit(self.prompt_template, self.reward_funcs))):
            try:
                check()
            except ValueError as e:
                raise ParamsError(f"param {key!r} = {self.reward_funcs!r}: {e}") from None

    # -- I/O ---------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "params") -> Params:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            hints = {u: _closest(u, cls.field_names()) for u in unknown}
            detail = ", ".join(f"{u!r}" + (f" (did you mean {h!r}?)" if h else "") for u, h in hints.items())
            raise ParamsError(f"{source}: unknown param(s) {detail}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        lines, section = [], None
        for f in dataclasses.fields(self):
            if f.metadata["section"] != section:
                section = f.metadata["section"]
                lines.append(f"# --- {section} ---")
            value = yaml.safe_dump(getattr(self, f.name), default_flow_style=True, width=10_000)
            lines.append(f"{f.name}: {value.strip().removesuffix('...').strip()}")
        return "\n".join(lines) + "\n"

    def replace(self, **changes) -> Params:
        return dataclasses.replace(self, **changes)

    @property
    def eval_sample_seed(self) -> int:
        """The seed of the `eval_limit` subset: `eval_subset_seed`, else `seed`."""
        return self.seed if self.eval_subset_seed is None else self.eval_subset_seed

    @property
    def run_dir(self) -> Path:

        return resolve_repo_path(self.runs_dir) / self.run_name


def _allowed_types(hint) -> list[type]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    out = []
    for a in args:
        a = typing.get_origin(a) or a
        out.append(type(None) if a is type(None) else a)
    if float in out:
        out.append(int)
    return out


def _type_name(allowed) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(a, a.__name__) for a in allowed))


def _closest(name: str, candidates: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    return match[0] if match else None


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is parsed as YAML (`lora_r=16`, `reward_funcs=[a,b]`)."""
    if "=" not in text:
        raise ParamsError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as e:
        raise ParamsError(f"override {text!r}: value is not valid YAML ({e})") from None
    return key.strip(), value


def read_params_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A params file's key: value mapping; with `extends: other.yaml` (next to it) other.yaml's first, so a
    recipe's control arm is a short diff over the recipe, not a copy that drifts from it."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"params file {str(path)!r} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ParamsError(f"params file {str(path)!r} is not UTF-8: {e}") from None
    if not isinstance(values, dict):
        raise ParamsError(f"params file {str(path)!r} must be a mapping of key: value, got {type(values).__name__}")
    if "extends" in values:
        base, target = values.pop("extends"), None
        if isinstance(base, str) and base and (target := (path.parent / base).resolve()) in (*_seen, path.resolve()):
            raise ParamsError(f"params file {str(path)!r}: 'extends' {base!r} makes a circle")
        if target is None:
            raise ParamsError(f"params file {str(path)!r}: 'extends' must name a params file, got {base!r}")
        values = {**read_params_file(target, (*_seen, path.resolve())), **values}
    return values


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Params:
    """Params from a YAML file plus overrides (a dict, or `key=value` strings from `--set`).

    >>> load_params(None, ["lora_r=4"]).lora_r
    4
    """
    values = read_params_file(path) if path is not None else {}
    if isinstance(overrides, list | tuple):
        overrides = dict(parse_override(o) for o in overrides)
    values.update(overrides or {})
    return Params.from_dict(values, source=str(path) if path else "params")


def params_from_namespace(namespace: dict[str, Any]) -> Params:
    """Params from a notebook's globals, after papermill injected its parameters.

    Only known param names are taken, so notebooks can hold other variables freely; a notebook that
    sets `params_file` starts from that file and lets its own variables override it.
    """
    values = {k: namespace[k] for k in Params.field_names() if k in namespace}
    params_file = namespace.get("params_file")
    if params_file:

        base = read_params_file(resolve_repo_path(params_file))
        base.update(values)
        values = base
    return Params.from_dict(values, source="notebook parameters")
