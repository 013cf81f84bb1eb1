"""What the rewards say about real-looking completions, and about the model's own samples.

Notebook 02 uses this to show, before any training, that the rewards measure the right thing (a good
answer scores, a hacked one does not) and whether the chosen model can earn any reward at all: GRPO
learns only from reward differences inside a group, so a model whose samples all score the same
(`frac_reward_zero_std` = 1) gets no gradient whatever the learning rate.
"""

from __future__ import annotations

import json

import pandas as pd

from medr1.config import Params
from medr1.data import Question
from medr1.generation.hf import generate
from medr1.generation.vision import generate_vision
from medr1.models.load import load_model
from medr1.models.vision import is_processor
from medr1.task.answers import extract_choice_with_rule
from medr1.task.prompts import build_messages, get_template, vision_messages
from medr1.task.rewards import REWARD_FUNCS

EXAMPLE_QUESTION = Question(
    id="example-1", source="example",
    question="A 45-year-old man has crushing chest pain radiating to the left arm. Which test comes first?",
    options={"A": "Chest X-ray", "B": "12-lead ECG", "C": "Abdominal ultrasound", "D": "Lumbar puncture"},
    answer="B",
)

# (label, completion): one per behaviour the rewards must tell apart.
EXAMPLE_COMPLETIONS = [
    ("good, tagged", "<think>Suspected MI: an ECG within 10 minutes.</think>\n<answer>B</answer>"),
    ("wrong, tagged", "<think>Could be the lungs.</think>\n<answer>A</answer>"),
    ("good, plain statement", "The ECG is first. Answer: B"),
    ("good, option text", "<think>ECG first.</think>\n<answer>(B) 12-lead ECG</answer>"),
    ("hack: every letter", "<think>Cover all bases.</think>\n<answer>ABCD</answer>"),
    ("hack: two answers", "<think>Hmm.</think>\n<answer>A</answer>\n<answer>B</answer>"),
    ("hack: answer only in think", "<think>The answer is B.</think>\n<answer></answer>"),
    ("hedged: A or B", "<think>Unsure.</think>\n<answer>A or B</answer>"),
    ("truncated", "<think>The patient is 45 and the pain radiates to the left arm, so we should"),
    ("not an option", "<think>Other.</think>\n<answer>E</answer>"),
    ("empty", ""),
]


def score_examples(reward_names: list[str], question: Question = EXAMPLE_QUESTION,
                   examples=EXAMPLE_COMPLETIONS) -> pd.DataFrame:
    """One row per example completion: what extraction found, and each reward's score."""
    kwargs = {"answer": [question.answer] * len(examples),
              "options_json": [json.dumps(question.options)] * len(examples)}
    completions = [[{"role": "assistant", "content": text}] for _, text in examples]
    table = pd.DataFrame({"example": [label for label, _ in examples],
                          "extracted": [extract_choice_with_rule(t, question.options).letter for _, t in examples],
                          "rule": [extract_choice_with_rule(t, question.options).rule for _, t in examples]})
    for name in reward_names:
        table[name] = REWARD_FUNCS[name](completions, **kwargs)
    return table


# Notebook 02 compares prompt templates by the paper recipe's rewards for their answer format (binary accuracy
# plus the strict check of that format), each weighted 1. A comparison only: a run trains on its own
# `params.reward_funcs`, the one place rewards are chosen.
COMPARISON_REWARDS = {"tags": ("accuracy", "format"), "statement": ("accuracy", "answer_parsable"),
                      "free": ("accuracy",)}


def rewards_for(params: Params, template: str) -> tuple[list[str], list[float]]:
    """The rewards a template is scored by here: the run's own for its template, else `COMPARISON_REWARDS`
    of the template's answer format (each weighted 1): `r1` by accuracy + format, `letter` by accuracy +
    answer_parsable."""
    if template == params.prompt_template:
        return list(params.reward_funcs), list(params.reward_weights or [1.0] * len(params.reward_funcs))
    names = list(COMPARISON_REWARDS[get_template(template).answer_format])
    return names, [1.0] * len(names)


def sample_rewards(params: Params, questions: list[Question], *, num_samples: int = 4,
                   max_new_tokens: int | None = None, templates: list[str] | None = None) -> pd.DataFrame:
    """Sample the model on `questions` as GRPO would (temperature, group size) and score every sample.

    Returns:
        one row per (template, question, sample) with the completion, extraction, each reward of that
        template (see `rewards_for`) and their weighted `total`, plus `group_std`: the spread of the total
        within that question's group, which is what GRPO learns from.
    """

    model, tokenizer = load_model(params.model, device=params.device, torch_dtype=params.torch_dtype,
                                  trust_remote_code=params.trust_remote_code)

    # a vision-language model: images through its processor (medr1.models.vision)
    generate_fn = generate_vision if is_processor(tokenizer) else generate
    rows = []
    for template in templates or [params.prompt_template]:
        names, weights = rewards_for(params, template)
        prompts = [vision_messages(q, template) if q.images else build_messages(q, template) for q in questions]
        outputs = generate_fn(model, tokenizer, prompts, max_new_tokens=max_new_tokens or params.max_completion_length,
                              temperature=params.temperature, top_p=params.top_p, num_samples=num_samples,
                              seed=params.seed, batch_size=params.eval_batch_size)
        for q, out in zip(questions, outputs, strict=True):
            texts = out.texts
            kwargs = {"answer": [q.answer] * len(texts), "options_json": [json.dumps(q.options)] * len(texts)}
            scores = {n: REWARD_FUNCS[n]([[{"role": "assistant", "content": t}] for t in texts], **kwargs)
                      for n in names}
            for i, text in enumerate(texts):
                found = extract_choice_with_rule(text, q.options)
                row = {"template": template, "rewards": " + ".join(f"{w:g}*{n}" for n, w in zip(names, weights, strict=True)),
                       "question": q.id, "sample": i, "completion": text, "extracted": found.letter,
                       "rule": found.rule, "gold": q.answer}
                row.update({n: scores[n][i] for n in names})
                row["total"] = sum(w * scores[n][i] for n, w in zip(names, weights, strict=True))
                rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["group_std"] = table.groupby(["template", "question"])["total"].transform("std")
    return table


def group_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per template: mean reward, parse rate, and the share of groups with zero reward spread (no signal)."""
    groups = samples.groupby(["template", "question"])["total"].std().fillna(0).reset_index()
    return pd.DataFrame({
        "rewards": samples.groupby("template")["rewards"].first(),
        "mean_total_reward": samples.groupby("template")["total"].mean(),
        "parsed": samples.assign(parsed=samples["extracted"].notna()).groupby("template")["parsed"].mean(),
        "accuracy": samples.assign(ok=samples["extracted"] == samples["gold"]).groupby("template")["ok"].mean(),
        "frac_zero_std_groups": groups.assign(zero=groups["total"] == 0).groupby("template")["zero"].mean(),
    })
