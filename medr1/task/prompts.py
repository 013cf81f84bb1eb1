"""Prompt templates, chosen by name; the one place that defines the answer format.

Training and evaluation build their prompts here and nowhere else: a template copied between the two
drifts, and then a model is scored on a format it was not trained on. Each template also declares the
answer format its completions should follow (`answer_format`). Rewards are chosen in one place, the params'
`reward_funcs`; the rewards that read one answer format only are listed in `FORMAT_REWARDS`, and
`check_rewards_fit` refuses a reward that cannot score the template's format when params load.

The tags (`<think>`, `<answer>`) are constants here; `medr1.task.answers` imports them, so the parser and the
instruction can never disagree about spelling.

Templates:
- `r1`: DeepSeek-R1 / Med-R1 style. A system prompt asks for reasoning inside <think></think> and only
  the option letter inside <answer></answer>. The paper recipes train with it (rewards: binary accuracy
  + format).
- `huatuo`: HuatuoGPT-o1's plain evaluation prompt, no system prompt, for comparing with their numbers.
- `huatuo_strict`: their `--strict_prompt` variant (asks to end with "The answer is A."), their wording
  byte for byte, including its repeated first sentence.
  Both take the question text verbatim (unstripped, as their `format_map` does); a PubMedQA abstract is
  expected inside the question in their layout (`medr1.data.published.huatuo_pubmedqa_text`).
- `letter`: for tiny models (the embedded SmolLM2-135M demo). Measured: with the R1 prompt it emitted no
  tags in 3 GRPO steps, so every reward was 0 and GRPO had nothing to compare; asked plainly for
  "Answer: X", about 1 in 4 of its answers parse, which gives the group reward variance to climb from.
- `letter_think`: the same statement format after a few sentences of reasoning (small, not tiny, models).
- `option_text`: the options as unlettered lines, the answer as the chosen option's text ("Answer: <text>";
  `medr1.answers` reads an option's text as its letter). The fit check (params/control-fit.yaml) trains with
  it: with letters on screen, the cheapest way up a letter reward is a letter habit, which shuffled gold
  letters turn into noise; an option's text is the same under every order, so the only way to earn reward
  is to know which text is right.

No torch or transformers here: the data pipeline and the CLI import this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medr1.data.published import HUATUO_PUBMEDQA_REFERENCE
from medr1.data.schema import MAX_OPTIONS, MIN_OPTIONS
from medr1.paths import file_sha256

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_TAGS = (THINK_OPEN, THINK_CLOSE)
ANSWER_TAGS = (ANSWER_OPEN, ANSWER_CLOSE)

# What a completion is asked to end with, so rewards and scorers know what to look for:
# "tags": <think>...</think><answer>X</answer>;  "statement": a final line "Answer: X";
# "free": nothing is asked (the huatuo prompt), only the shared extraction rules apply.
ANSWER_FORMATS = ("tags", "statement", "free")

@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt: optional system message, user message pattern, and the answer format it asks for.

    Args:
        name: the key in `TEMPLATES`.
        system: system message, or None to send only a user message.
        user: pattern with the fields `{question}` (stem, with context), `{options}` ("A. text" lines)
            and `{letters}` ("A, B, C or D"); other braces must be doubled.
        answer_format: one of `ANSWER_FORMATS`.
        description: one line for listings and error messages.
        verbatim: the question text goes in unstripped, and a `meta["context"]` in HuatuoGPT-o1's document
            layout instead of ours ("Context: ...\nQuestion: ..."), so their prompts are reproduced exactly.
        lettered: options as "A. text" lines; False: "- text" lines, in the same order (`option_text`).
    """

    name: str
    system: str | None
    user: str
    answer_format: str
    description: str
    verbatim: bool = False
    lettered: bool = True

    def __post_init__(self) -> None:
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"template {self.name!r}: answer_format must be one of {ANSWER_FORMATS}, "
                             f"got {self.answer_format!r}")


# Reworded from open-r1's SYSTEM_PROMPT (itself from the DeepSeek-R1 paper); "only the letter" because
# the accuracy reward compares letters and a free-text answer inside the tag invites paraphrase.
_R1_SYSTEM = (
    "A conversation between User and Assistant. The User asks a multiple-choice medical question and the "
    "Assistant answers it. The Assistant first thinks about the reasoning process and then gives the "
    f"final answer. The reasoning is enclosed in {THINK_OPEN} {THINK_CLOSE} tags and the final answer in "
    f"{ANSWER_OPEN} {ANSWER_CLOSE} tags, i.e. {THINK_OPEN} reasoning here {THINK_CLOSE}"
    f"{ANSWER_OPEN} letter here {ANSWER_CLOSE}. The answer tag contains only the letter of the chosen "
    "option and nothing else."
)

TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate(
            name="r1",
            system=_R1_SYSTEM,
            user="{question}\n{options}",
            answer_format="tags",
            description="R1-style: reason in <think>, only the option letter in <answer> (paper recipes)",
        ),
        # HuatuoGPT-o1 evaluation/eval.py (FreedomIntelligence/HuatuoGPT-o1, `--format huatuo` without
        # `--strict_prompt`): query_prompt "Please answer the following multiple-choice question:\n
        # {question}\n{option_str}", option_str = "\n".join(f"{letter}. {text}"), sent as the only
        # (user) message through the model's chat template. Reproduced byte for byte (tests/task/test_protocols.py);
        # the prompt is one part of their protocol, with their sets and sampling (medr1.task.protocols).
        PromptTemplate(
            name="huatuo",
            system=None,
            user="Please answer the following multiple-choice question:\n{question}\n{options}",
            answer_format="free",
            description="HuatuoGPT-o1's plain evaluation prompt (no system prompt, no format asked)",
            verbatim=True,
        ),
        # The same file, with `--strict_prompt`: their query_prompt, first sentence repeated as in their code.
        PromptTemplate(
            name="huatuo_strict",
            system=None,
            user=("Please answer the following multiple-choice questions. Please answer the following "
                  "multiple-choice questions, ensuring your response concludes with the correct option in the "
                  "format: 'The answer is A.'.\n{question}\n{options}"),
            answer_format="free",
            description="HuatuoGPT-o1's --strict_prompt evaluation prompt (asks for 'The answer is A.')",
            verbatim=True,
        ),
        PromptTemplate(
            name="letter",
            system=None,
            user=("{question}\n{options}\n\n"
                  "Reply with one short line: \"Answer: X\", where X is the letter of the correct option "
                  "({letters})."),
            answer_format="statement",
            description="tiny models: asks plainly for one line 'Answer: X' (embedded SmolLM2-135M demo)",
        ),
        PromptTemplate(
            name="letter_think",
            system=None,
            user=("{question}\n{options}\n\n"
                  "Think briefly (two or three sentences), then finish with one line: \"Answer: X\", where X "
                  "is the letter of the correct option ({letters})."),
            answer_format="statement",
            description="small models: brief reasoning, then a final line 'Answer: X'",
        ),
        PromptTemplate(
            name="option_text",
            system=None,
            user=("{question}\n{options}\n\n"
                  "Reply with one short line: \"Answer: \" followed by the correct option, copied exactly."),
            answer_format="statement",
            description="fit check: unlettered options, answer with the option's text ('Answer: <text>')",
            lettered=False,
        ),
    )
}


# Rewards that score one answer format only (every other reward reads any format): checked against the
# template when params load, so that a run never trains on a reward its prompt cannot earn.
FORMAT_REWARDS = {"format": "tags", "format_shaped": "tags", "answer_line": "statement"}


def check_rewards_fit(template: str, reward_names) -> None:
    """Raise ValueError when a reward in `reward_names` scores an answer format other than the template's.

    >>> check_rewards_fit("r1", ["accuracy", "format"])
    >>> check_rewards_fit("letter", ["format"])
    Traceback (most recent call last):
    ...
    ValueError: reward 'format' scores the tags answer format; template 'letter' asks for statement (use a template with that format, or another reward)
    """
    fmt = get_template(template).answer_format
    for name in reward_names:
        if FORMAT_REWARDS.get(name, fmt) != fmt:
            raise ValueError(f"reward {name!r} scores the {FORMAT_REWARDS[name]} answer format; template {template!r} "
                             f"asks for {fmt} (use a template with that format, or another reward)")


def get_template(name: str | PromptTemplate) -> PromptTemplate:
    """The template called `name` (a `PromptTemplate` is returned as is).

    Args:
        name: a key of `TEMPLATES`.

    Returns:
        The `PromptTemplate`.

    Raises:
        ValueError: unknown name; the message lists the known ones.

    >>> get_template("r1").answer_format
    'tags'
    """
    if isinstance(name, PromptTemplate):
        return name
    if isinstance(name, str) and name in TEMPLATES:
        return TEMPLATES[name]
    known = ", ".join(sorted(TEMPLATES))
    raise ValueError(f"unknown prompt template {name!r}; known templates: {known}")


def _check_options(options: Any) -> Mapping[str, str]:
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict letter -> text, got {type(options).__name__}")
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise ValueError(f"a question needs {MIN_OPTIONS} to {MAX_OPTIONS} options, got {len(options)}")
    return options


def render_options(options: Mapping[str, str]) -> str:
    """Options as "A. text" lines, in the given order (HuatuoGPT-o1's layout, used by every template).

    >>> print(render_options({"A": "yes", "B": "no"}))
    A. yes
    B. no
    """
    return "\n".join(f"{letter}. {text}" for letter, text in _check_options(options).items())


def _letters_phrase(letters: list[str]) -> str:
    # "A or B", "A, B, C or D": read as one choice, unlike "A/B/C/D" which tiny models copy verbatim.
    return letters[0] if len(letters) == 1 else f"{', '.join(letters[:-1])} or {letters[-1]}"


def render_stem(q: Any) -> str:
    """The question text, preceded by "Context: ..." when `q.meta["context"]` holds one (PubMedQA PQA-L).

    >>> from types import SimpleNamespace as Q
    >>> print(render_stem(Q(question="Does X cause Y?", meta={"context": "We studied X."})))
    Context: We studied X.
    Question: Does X cause Y?
    """
    question = str(q.question).strip()
    meta = getattr(q, "meta", None) or {}
    context = meta.get("context") if isinstance(meta, Mapping) else None
    if isinstance(context, str) and context.strip():
        return f"Context: {context.strip()}\nQuestion: {question}"
    return question


def render_stem_verbatim(q: Any) -> str:
    """The question text exactly as stored; a `meta["context"]` goes first in HuatuoGPT-o1's layout.

    >>> from types import SimpleNamespace as Q
    >>> render_stem_verbatim(Q(question=" Does X cause Y? ", meta={}))
    ' Does X cause Y? '
    """
    meta = getattr(q, "meta", None) or {}
    context = meta.get("context") if isinstance(meta, Mapping) else None
    if isinstance(context, str) and context.strip():
        return f"{context}\n\n{HUATUO_PUBMEDQA_REFERENCE}\n{q.question}"
    return str(q.question)


def render_question(q: Any) -> str:
    """Stem (with context when present) then the options, one "A. text" line each.

    Args:
        q: a `medr1.data.Question` (anything with `.question`, `.options` and optionally `.meta`).

    Returns:
        The question block shared by all templates.

    >>> from types import SimpleNamespace as Q
    >>> print(render_question(Q(question="2+2?", options={"A": "3", "B": "4"}, meta={})))
    2+2?
    A. 3
    B. 4
    """
    return f"{render_stem(q)}\n{render_options(q.options)}"


def build_messages(q: Any, template: str | PromptTemplate = "r1") -> list[dict[str, str]]:
    """Chat messages for one question: a system message when the template has one, then the user turn.

    Args:
        q: a `medr1.data.Question` with 2 to 26 options.
        template: a name in `TEMPLATES` or a `PromptTemplate`.

    Returns:
        `[{"role": "system", ...}, {"role": "user", ...}]` (no system entry when the template has none).

    Raises:
        ValueError: unknown template, or options not a dict of 2 to 26 entries.

    >>> from types import SimpleNamespace as Q
    >>> msgs = build_messages(Q(question="2+2?", options={"A": "3", "B": "4"}, meta={}), "letter")
    >>> [m["role"] for m in msgs], msgs[0]["content"].splitlines()[-1]
    (['user'], 'Reply with one short line: "Answer: X", where X is the letter of the correct option (A or B).')
    """
    tpl = get_template(template)
    options = _check_options(q.options)
    user = tpl.user.format(
        question=render_stem_verbatim(q) if tpl.verbatim else render_stem(q),
        options=render_options(options) if tpl.lettered else "\n".join(f"- {text}" for text in options.values()),
        letters=_letters_phrase([str(k) for k in options]),
    )
    messages = [{"role": "system", "content": tpl.system}] if tpl.system else []
    messages.append({"role": "user", "content": user})
    return messages


def vision_messages(q: Any, template: str = "r1") -> list[dict]:
    """Chat messages of a visual question in the processor's format: the template's messages, every content
    a list of blocks, the question's images as `{"type": "image", "image": path}` blocks before the text of
    the first user message (where TRL's GRPOTrainer puts them in training).

    >>> from types import SimpleNamespace as Q
    >>> m = vision_messages(Q(question="Which organ?", options={"A": "liver", "B": "lung"}, meta={},
    ...                       images=("/d/x.png",)), "letter")
    >>> [b["type"] for b in m[0]["content"]]
    ['image', 'text']
    """

    out, placed = [], False
    for message in build_messages(q, template):
        content = [{"type": "text", "text": message["content"]}]
        if message["role"] == "user" and not placed:
            content = [{"type": "image", "image": p} for p in getattr(q, "images", ())] + content
            placed = True
        out.append({"role": message["role"], "content": content})
    return out



def prompt_identity(messages: list[dict] | str):
    """`messages` with each image path replaced by the sha256 of its file, for prompt hashes: the same
    question with the same image hashes alike wherever the data directory lies."""

    if isinstance(messages, str):
        return messages
    return [{**m, "content": [{"type": "image", "sha256": file_sha256(b["image"])}
                              if isinstance(b, dict) and b.get("type") == "image" else b for b in m["content"]]}
            if isinstance(m.get("content"), list) else m for m in messages]
