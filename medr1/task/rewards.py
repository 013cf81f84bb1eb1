"""GRPO reward functions, registered by name.

Rewards follow TRL's contract, `fn(completions, **kwargs) -> list[float]`: every dataset column
(`answer`, `options_json`, ...) arrives as a keyword argument, completions are strings or chat
messages. They are plain module-level functions in `REWARD_FUNCS`, each named (`__name__`) by its
registry key because TRL logs rewards as `rewards/<__name__>`. Weighting is left to TRL's
`reward_weights`; `validate_reward_config` checks names and weights before any model is loaded.

The answer a reward reads comes from `medr1.task.answers`, the same extraction the scorers use, so training
and evaluation cannot disagree about what a completion answered. Rewards are stricter in one way:
extraction lets the last answer win because models revise, while a reward pays only a committed answer
(no hedging between letters), or writing every letter once would be paid.

Which rewards, and why:
- Paper recipes (`r1` template): binary `accuracy` + binary `format`, as in DeepSeek-R1 and Med-R1. A
  binary signal cannot be gamed by partial formats, and models of 1B+ parameters follow the tags from
  the first steps, so groups already contain both 0s and 1s.
- The tiny-model demo (`letter` template, SmolLM2-135M): `accuracy` + `answer_parsable`. GRPO learns
  only from reward differences within a group; a 135M model rarely produces a parsable answer at all,
  so accuracy alone is 0 for whole groups and nothing moves. Paying for a parsable "Answer: X" first
  gives the group variance that lets it climb. `format_shaped` is the same idea for the tag format.

No torch or transformers here: evaluation and tests import this module without loading a model.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medr1.task.answers import EXPLICIT_RULES, Extraction, analyse
from medr1.task.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# --------------------------------------------------------------------------------------------------
# Reward functions (TRL signature) and their registry
# --------------------------------------------------------------------------------------------------

RewardFunc = Callable[..., list[float]]
REWARD_FUNCS: dict[str, RewardFunc] = {}
# (lowest, highest) value each reward can return: most are scores in [0, 1]; penalties are in [-1, 0].
REWARD_RANGES: dict[str, tuple[float, float]] = {}


def register(name: str, value_range: tuple[float, float] = (0.0, 1.0)) -> Callable[[RewardFunc], RewardFunc]:
    """Register a reward under `name` and make `name` its `__name__` (TRL logs `rewards/<__name__>`);
    `value_range` is the interval its values stay in (checked by the property tests)."""

    def decorator(fn: RewardFunc) -> RewardFunc:
        if name in REWARD_FUNCS:
            raise ValueError(f"reward {name!r} is already registered")
        fn.__name__ = fn.__qualname__ = name
        REWARD_FUNCS[name] = fn
        REWARD_RANGES[name] = value_range
        return fn

    return decorator


def get_reward_funcs(names: Sequence[str]) -> list[RewardFunc]:
    """The reward functions called `names`, in order.

    Raises:
        ValueError: an unknown name; the message lists the known ones.

    >>> [f.__name__ for f in get_reward_funcs(["accuracy", "format"])]
    ['accuracy', 'format']
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward function(s) {unknown}; known: {', '.join(sorted(REWARD_FUNCS))}")
    return [REWARD_FUNCS[n] for n in names]


def validate_reward_config(names: Sequence[str], weights: Sequence[float] | None = None) -> None:
    """Check reward names and weights before training starts (TRL applies the weights itself).

    Raises:
        ValueError: no names, unknown or repeated names, or weights that are not one finite number per
            name (or that are all zero).

    >>> validate_reward_config(["accuracy", "answer_parsable"], [1.0, 0.5])
    """
    if isinstance(names, str) or not names:
        raise ValueError(f"reward_funcs must be a non-empty list of names, got {names!r}")
    get_reward_funcs(names)
    if len(set(names)) != len(names):
        raise ValueError(f"reward_funcs repeats a name (TRL logs rewards by name): {list(names)}")
    if weights is None:
        return
    if isinstance(weights, str) or len(weights) != len(names):
        raise ValueError(f"reward_weights needs one weight per reward function: {len(names)} names "
                         f"({list(names)}), got {weights!r}")
    for name, w in zip(names, weights, strict=True):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"reward weight for {name!r} must be a finite number, got {w!r}")
    if all(w == 0 for w in weights):
        raise ValueError(f"reward_weights are all zero: {list(weights)}")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the assistant messages of a conversational one.

    >>> completion_text([{"role": "assistant", "content": "Answer: B"}])
    'Answer: B'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence):
        return ""
    parts = []
    for message in completion:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):  # multimodal content: [{"type": "text", "text": ...}]
            parts.extend(p.get("text", "") for p in content
                         if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def _column(kwargs: dict, name: str, n: int, required: bool) -> list:
    """A dataset column as a list of n values; a scalar is broadcast, a missing optional one is Nones."""
    values = kwargs.get(name)
    if values is None:
        if required:
            raise ValueError(f"reward needs the dataset column {name!r} (gold option letters); columns "
                             f"received: {sorted(kwargs)}")
        return [None] * n
    if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
        return [values] * n
    values = list(values)
    # TRL repeats every column once per generation; a mismatch is a pipeline bug, not an odd completion.
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _committed_answer(completion: Any, options: Any) -> Extraction:
    """The extraction, or None when the completion hedges: several <answer> blocks, or explicit answers
    naming different letters (or an ambiguous one) anywhere outside thinking.

    Extraction lets the last answer win because models revise; a reward must not, or writing every
    letter once would be paid whenever the last happens to be right.
    """
    analysis = analyse(completion_text(completion), options)
    if analysis.answer_blocks > 1:
        return Extraction(None, "ambiguous")
    named = {ex.letter for ex in analysis.explicit if ex.letter is not None}
    hedged = any(ex.rule == "ambiguous" for ex in analysis.explicit)
    if len(named) > 1 or (hedged and analysis.final.rule in EXPLICIT_RULES):
        return Extraction(None, "ambiguous")
    return analysis.final


def _gold(value: Any) -> str | None:
    return value.strip().upper() if isinstance(value, str) and value.strip() else None


@register("accuracy")
def accuracy(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion commits to the gold option, else 0.0.

    The answer is `extract_choice` of the completion (the same rules as evaluation), so with tags only
    the <answer> content counts when a tag is present, and an answer given only inside <think> does not
    count. Reward-hacking guards, each scoring 0: more than one <answer> block; explicit answers naming
    different letters ("Answer: A ... Answer: B", or a tag and a statement that disagree), since
    reasoning revisions belong inside <think>; listing letters ("A, B, C or D", "ABCD"); empty,
    truncated or unparsable completions.

    Args:
        completions: strings or chat messages.
        answer: (dataset column) gold letters, one per completion. Required.
        options_json: (dataset column) JSON of each question's options dict.

    >>> accuracy(["<think>...</think><answer>B</answer>", "Answer: A"], answer=["B", "B"],
    ...          options_json=['{"A": "x", "B": "y"}'] * 2)
    [1.0, 0.0]
    """
    completions = list(completions or [])
    gold = _column(kwargs, "answer", len(completions), required=True)
    options = _column(kwargs, "options_json", len(completions), required=False)
    rewards = []
    for completion, g, opts in zip(completions, gold, options, strict=True):
        letter = _committed_answer(completion, opts).letter
        rewards.append(1.0 if letter is not None and letter == _gold(g) else 0.0)
    return rewards


def _well_formed(text: str) -> bool:
    tags = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
    if any(text.count(tag) != 1 for tag in tags):
        return False
    body = text.strip()
    if not body.startswith(THINK_OPEN) or not body.endswith(ANSWER_CLOSE):
        return False
    think_close, answer_open = body.find(THINK_CLOSE), body.find(ANSWER_OPEN)
    if answer_open < think_close or body[think_close + len(THINK_CLOSE):answer_open].strip():
        return False
    return bool(body[answer_open + len(ANSWER_OPEN):-len(ANSWER_CLOSE)].strip())


@register("format")
def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for exactly `<think>...</think>` then `<answer>...</answer>` and nothing else, else 0.0.

    Whitespace may surround and separate the two blocks; each tag appears exactly once; the answer may
    not be empty (the thinking may, as in Qwen3's non-thinking mode). Registered as "format".

    >>> format_reward(["<think>x</think>\\n<answer>B</answer>", "<answer>B</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if _well_formed(completion_text(c)) else 0.0 for c in completions or []]


def _parsable(completion: Any, options: Any) -> bool:
    ex = _committed_answer(completion, options)
    return ex.letter is not None and ex.rule in EXPLICIT_RULES


@register("answer_parsable")
def answer_parsable(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion commits to one option explicitly ("Answer: X" with X an option, an
    <answer> tag, a bare letter...), right or wrong; else 0.0. An option's text merely appearing does
    not count. The shaping reward of the tiny-model demo (see the module docstring).

    Args:
        completions: strings or chat messages.
        options_json: (dataset column) JSON of each question's options dict; without it any letter A-Z
            counts.

    >>> answer_parsable(["Answer: B", "I am not sure."], options_json=['{"A": "x", "B": "y"}'] * 2)
    [1.0, 0.0]
    """
    completions = list(completions or [])
    options = _column(kwargs, "options_json", len(completions), required=False)
    return [1.0 if _parsable(c, o) else 0.0 for c, o in zip(completions, options, strict=True)]


# The statement templates' answer line: "Answer: X" (X a letter, maybe bracketed, maybe with a period and
# text after it, which extraction then checks against option X's text).
_ANSWER_LINE = re.compile(r"^\s*answer\s*:\s*\(?([A-Za-z])\)?(?:[.):]|\s|$)", re.IGNORECASE)


@register("answer_line")
def answer_line(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion's last non-empty line is the line the statement templates ask for,
    "Answer: X", and the completion commits to X (no earlier answer naming another letter, no text after
    the letter that is another option's); else 0.0. The strict format reward of the `letter` and
    `letter_think` templates, as `format` is of `r1`.

    Why, beside `answer_parsable`: a tiny model answers by copying an option line ("C. Polyarteritis
    nodosa"), and once GRPO moves its letter prior, the letter and the copied text drift apart ("C." with
    option D's text), which evaluation rightly reads as ambiguous: the first balanced CPU demo left 23 of
    80 MedQA answers unparsed against the base model's 14, mostly so. "Answer: X" states one letter and
    nothing that can contradict it.

    Args:
        completions: strings or chat messages.
        options_json: (dataset column) JSON of each question's options dict; without it any letter A-Z
            counts.

    >>> answer_line(["Answer: B", "B. heparin", "Answer: B. aspirin", "Answer: A\\nAnswer: B", "Why?\\nAnswer: A"],
    ...             options_json=['{"A": "aspirin", "B": "heparin"}'] * 5)
    [1.0, 0.0, 0.0, 0.0, 1.0]
    """
    completions = list(completions or [])
    options = _column(kwargs, "options_json", len(completions), required=False)
    rewards = []
    for completion, opts in zip(completions, options, strict=True):
        lines = [line for line in completion_text(completion).splitlines() if line.strip()]
        m = _ANSWER_LINE.match(lines[-1]) if lines else None
        ok = m is not None and _committed_answer(completion, opts).letter == m.group(1).upper()
        rewards.append(1.0 if ok else 0.0)
    return rewards


@register("format_shaped")
def format_shaped(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Partial credit towards the tag format: 0.125 for each of the four tags present exactly once, plus
    0.5 for an explicit answer naming an option (as `answer_parsable`). In [0, 1]; 1.0 does not imply
    `format` (order is not checked), it only gives small models a slope towards it.

    >>> format_shaped(["<think>x</think> Answer: B", "<think>x"], options_json=['{"A": "x", "B": "y"}'] * 2)
    [0.75, 0.125]
    """
    completions = list(completions or [])
    options = _column(kwargs, "options_json", len(completions), required=False)
    rewards = []
    for completion, opts in zip(completions, options, strict=True):
        text = completion_text(completion)
        tags = sum(text.count(tag) == 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
        rewards.append(0.125 * tags + (0.5 if _parsable(completion, opts) else 0.0))
    return rewards


@register("letter_balance", value_range=(-1.0, 0.0))
def letter_balance(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """A batch-level penalty, in [-1, 0], for answering a letter more often than the batch's gold letters
    make it right: the guard against a policy that drifts to its favourite letter.

    For a completion answering L: -(share of the batch answering L - share of gold L), floored at 0 and
    divided by (1 - share of gold L) so that the worst case is -1. A letter answered no more often than
    it is gold costs nothing, so a model that answers by content is never penalised; a model answering
    "A" to everything loses up to 1 per completion. Unparsable or hedged completions get -1, the worst
    value, so escaping the penalty by not answering cannot pay. TRL calls rewards once per generation
    batch (the step's completions), which is the batch meant here; with option shuffling
    (`medr1.data.option_order`) the step's gold letters are balanced, so this pushes towards balance.

    Args:
        completions: strings or chat messages.
        answer: (dataset column) gold letters, one per completion. Required.
        options_json: (dataset column) JSON of each question's options dict.

    >>> letter_balance(["Answer: A", "Answer: A", "Answer: B", "no idea"], answer=["A", "B", "C", "D"])
    [-0.3333333333333333, -0.3333333333333333, 0.0, -1.0]
    """
    completions = list(completions or [])
    n = len(completions)
    gold = [_gold(g) for g in _column(kwargs, "answer", n, required=True)]
    options = _column(kwargs, "options_json", n, required=False)
    letters = [_committed_answer(c, o).letter for c, o in zip(completions, options, strict=True)]
    answered, golds = Counter(x for x in letters if x), Counter(x for x in gold if x)
    rewards = []
    for letter in letters:
        if letter is None:
            rewards.append(-1.0)
            continue
        gold_share = golds[letter] / n
        excess = max(0.0, answered[letter] / n - gold_share)
        rewards.append(0.0 - excess / (1 - gold_share) if gold_share < 1 else 0.0)  # 0.0 -: no -0.0
    return rewards
