"""The multiple-choice task: what a question is asked as, what an answer is, and what it earns.

- `prompts`: the prompt templates by name (and the vision prompt beside the text one).
- `answers`: extraction of the chosen letter, with the rule that matched.
- `rewards`: GRPO reward functions, registered by name.
- `letter_bias`: answer shares, per-letter recall, collapse detection: a property of multiple-choice answers.
- `protocols`: the evaluation protocol registry (sets, prompt, decoding, scorer, comparability).

`medr1.config` validates names against these registries, so this package imports nothing above `data/`.
"""
