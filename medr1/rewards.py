"""Answer extraction and GRPO reward functions, registered by name.

One extraction function, `extract_choice_with_rule`, serves both the rewards (training) and the
scorers (evaluation): if the two parsed answers differently, a model could learn a format that the
evaluation then reads as wrong, or the reverse. It reports *how* it matched (`Extraction.rule`), so an
evaluation can give a parse rate per rule instead of a single accuracy that hides format failures.

The policy (the docstring of `extract_choice_with_rule` spells it out) is strict on purpose: it never
guesses. HuatuoGPT-o1's scorer falls back to a fuzzy match that always produces some answer; ours
returns None when the text does not name exactly one option, so "no answer" is never counted as a
lucky guess.

Rewards follow TRL's contract, `fn(completions, **kwargs) -> list[float]`: every dataset column
(`answer`, `options_json`, ...) arrives as a keyword argument, completions are strings or chat
messages. They are plain module-level functions in `REWARD_FUNCS`, each named (`__name__`) by its
registry key because TRL logs rewards as `rewards/<__name__>`. Weighting is left to TRL's
`reward_weights`; `validate_reward_config` checks names and weights before any model is loaded.

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

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from medr1.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Rules that mean "the model stated an answer" (as opposed to "an option's text happens to appear").
EXPLICIT_RULES = ("answer_tag", "answer_statement", "boxed", "final_heading", "bare_letter")
RULES = (*EXPLICIT_RULES, "option_text", "none", "ambiguous", "truncated", "not_an_option")

# Statement slots and boxed contents are read this far; an answer is a letter or an option's text,
# and the bound keeps every regex below linear in the completion length.
_SLOT_CHARS = 300
_BOX_CHARS = 120


class Extraction(NamedTuple):
    """What `extract_choice_with_rule` found: the letter (or None) and the rule that decided it."""

    letter: str | None
    rule: str


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    letters: frozenset[str]
    # (normalized text, letter), longest text first so "aspirin and clopidogrel" beats "aspirin".
    texts: tuple[tuple[str, str], ...]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _norm_option_text(text: str) -> str:
    return _norm(text).strip(" .;:,!?\"'*_`")


def _build_options(items: Iterable[tuple[Any, Any]]) -> _Options | None:
    letters, texts = set(), []
    for key, value in items:
        letter = str(key).strip().upper()
        if len(letter) != 1 or letter not in LETTERS:
            return None
        letters.add(letter)
        text = _norm_option_text(str(value)) if value is not None else ""
        # One-character texts ("A", "O" as blood groups) would match letters and articles everywhere.
        if len(text) >= 2:
            texts.append((text, letter))
    if not letters:
        return None
    texts.sort(key=lambda t: -len(t[0]))
    return _Options(frozenset(letters), tuple(texts))


@functools.lru_cache(maxsize=4096)
def _options_from_json(options_json: str) -> _Options | None:
    try:
        obj = json.loads(options_json)
    except (ValueError, TypeError, RecursionError):
        return None
    return _coerce_options(obj) if not isinstance(obj, str) else None


def _coerce_options(options: Any) -> _Options | None:
    """Options as parsed, or None when they cannot be read (then any letter A-Z is accepted)."""
    if isinstance(options, _Options):
        return options
    if isinstance(options, str):
        return _options_from_json(options)
    try:
        if isinstance(options, Mapping):
            return _build_options(options.items())
        if isinstance(options, Sequence) and not isinstance(options, bytes | bytearray):
            if len(options) > len(LETTERS):
                return None
            return _build_options(zip(LETTERS, options, strict=False))
    except Exception:  # a hostile Mapping (raising __iter__/__str__) must not crash a training step
        return None
    return None


_ANY_LETTER = _Options(frozenset(LETTERS), ())


# --------------------------------------------------------------------------------------------------
# Slots: the short text right after "Answer:", inside <answer>, or \boxed{}
# --------------------------------------------------------------------------------------------------

# Markdown emphasis and quotes before the answer; then also "option"/"choice" and hedging adverbs.
_MARKUP = re.compile(r"[\s*_`\"'“”‘’>:#=\-]*")
_LEAD = re.compile(
    r"[\s*_`\"'“”‘’>:#=\-]*"
    r"(?:(?:probably|likely|clearly|definitely|therefore|thus|hence|most\s+likely)\s*[,:]?\s+)?"
    r"[\s*_`\"'“”‘’]*"
    r"(?:(?:option|choice|letter|answer)\s*[:#]?\s*)?"
    r"[\s*_`\"'“”‘’]*",
    re.IGNORECASE,
)
# A letter standing alone: not followed by a letter, digit, hyphen or apostrophe ("Aspirin", "X-linked",
# "I'm" are words). Optional bracket before it.
_LETTER = re.compile(r"[(\[{]?[ \t]*([A-Za-z])(?![A-Za-z0-9\-'’])")
# What may follow a letter when we cannot tell it from a word ("a", "I"): end, newline or punctuation.
_STRICT_FOLLOW = re.compile(r"[ \t]*(?:\Z|[\n.,;:!?)\]}*_`\"'”’<]|[ \t][-–—])")
# Another letter joined to the first ("A or B", "A, B", "A/B", "A and B", "A B"): two answers.
# Closers, spaces, joiner, spaces, openers: no two adjacent parts can both eat a space, so a long run of
# blanks is read once (adjacent `[ \t]*`s backtrack cubically: 30 s on a 100k completion).
_SECOND_LETTER = re.compile(
    r"[)\]}*_`\"'”’]*[ \t]*(?:(?:,|/|&|\+|or\b|and\b)[ \t]*)?[*_`\"'“‘(\[{]*([A-Za-z])(?![A-Za-z0-9\-'’])",
    re.IGNORECASE,
)
# "ABCD", "AC": a run of option letters written as one word.
_LETTER_RUN = re.compile(r"[(\[{]?([A-Z]{2,26})(?![A-Za-z0-9])")
_ARTICLE = re.compile(r"(?:the|an|a)\s+", re.IGNORECASE)
_JOINER = re.compile(r"\s*(?:,|/|&|\+|\bor\b|\band\b)\s*", re.IGNORECASE)


def _is_letter_token(slot: str, m: re.Match, strict: bool) -> bool:
    """Whether the letter matched at `m` is an option letter rather than a word."""
    letter = m.group(1)
    follows_cleanly = _STRICT_FOLLOW.match(slot, m.end()) is not None
    if follows_cleanly:
        return True
    if strict or letter.islower():
        # Lowercase "a"/"i" and friends are words unless punctuation or the end follows:
        # "the answer is a" -> A, but "the answer is a beta blocker" -> not A.
        return False
    # "I think ...", "I would ...": the pronoun, not option I.
    return not (letter == "I" and re.match(r"[ \t]+[a-z]", slot[m.end():m.end() + 2]))


def _text_prefix(s: str, opts: _Options) -> tuple[str | None, str]:
    """Letter whose option text `s` starts with (longest wins; "" when two options tie), and the rest.

    A leading article is skipped when nothing matches with it: "a beta blocker" names "Beta blocker".
    """
    norm = _norm(s[:_SLOT_CHARS])
    candidates = [norm]
    if art := _ARTICLE.match(norm):
        candidates.append(norm[art.end():])
    for cand in candidates:
        found: list[tuple[str, str]] = []
        for text, letter in opts.texts:
            if found and len(text) < len(found[0][0]):
                break
            if cand.startswith(text) and (len(cand) == len(text) or not cand[len(text)].isalnum()):
                found.append((text, letter))
        if found:
            if len({letter for _, letter in found}) > 1:
                return "", ""
            return found[0][1], cand[len(found[0][0]):]
    return None, ""


def _parse_slot(slot: str, opts: _Options, strict: bool = False) -> Extraction | None:
    """Read one answer slot: an option's text, a letter (with its text), or two answers (ambiguous).

    Returns an Extraction whose rule is "" on success (the caller names the source), "ambiguous" or
    "not_an_option"; or None when the slot names no option at all, so the caller may look elsewhere.
    """
    slot = slot[:_SLOT_CHARS]
    light = slot[_MARKUP.match(slot).end():]
    body = slot[_LEAD.match(slot).end():]

    # An option's own text first: "C. difficile colitis" is a text, not the letter C.
    for candidate in (light, body):
        letter, rest = _text_prefix(candidate, opts)
        if letter == "":
            return Extraction(None, "ambiguous")
        if letter is not None:
            if (j := _JOINER.match(rest)) and j.end() < len(rest):
                other, _ = _text_prefix(rest[j.end():], opts)
                if other is not None and other != letter:
                    return Extraction(None, "ambiguous")
            return Extraction(letter, "")

    m = _LETTER.match(body)
    if m and _is_letter_token(body, m, strict):
        letter = m.group(1).upper()
        after = body[m.end():]
        second = _SECOND_LETTER.match(after)
        if second and _is_letter_token(after, second, strict=False) and second.group(1).upper() != letter:
            return Extraction(None, "ambiguous")
        if letter not in opts.letters:
            return Extraction(None, "not_an_option")
        # "C. Aspirin" must name C's own text; "C. Warfarin" (B's text) contradicts itself.
        text_letter, _ = _text_prefix(after.lstrip(" \t.,:;)]}*_-–—"), opts)
        if text_letter is not None and text_letter != letter:
            return Extraction(None, "ambiguous")
        return Extraction(letter, "")

    run = _LETTER_RUN.match(body)
    if run and len(set(run.group(1))) > 1 and set(run.group(1)) <= opts.letters:
        return Extraction(None, "ambiguous")
    return None


# --------------------------------------------------------------------------------------------------
# Regions: thinking removed, answer tags found
# --------------------------------------------------------------------------------------------------


def _strip_think(text: str) -> tuple[str, bool]:
    """Text outside thinking blocks, and whether it ends inside an unclosed <think>.

    A block runs from <think> to the next </think>. A </think> with no <think> before it closes a block
    opened by the chat template (R1-distill models start inside one), so the text before it is
    reasoning too; nested blocks are removed the same way. Linear: each find starts where the last
    stopped, and the next-tag positions are cached.
    """
    out, pos, n = [], 0, len(text)
    next_open = text.find(THINK_OPEN)
    next_close = text.find(THINK_CLOSE)
    while pos < n:
        if next_open != -1 and next_open < pos:
            next_open = text.find(THINK_OPEN, pos)
        if next_close != -1 and next_close < pos:
            next_close = text.find(THINK_CLOSE, pos)
        if next_close != -1 and (next_open == -1 or next_close < next_open):
            pos = next_close + len(THINK_CLOSE)  # stray close: everything since `pos` was thinking
            continue
        if next_open == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:next_open])
        if next_close == -1:
            return "".join(out), True
        pos = next_close + len(THINK_CLOSE)
    return "".join(out), False


def _answer_blocks(region: str) -> tuple[list[str], bool]:
    """Contents of <answer>...</answer> blocks, and whether the last <answer> is never closed.

    A block starts at the last <answer> before its </answer>, so "<answer>B<answer>A</answer>" reads A
    (the earlier, unclosed one is a second answer, which the rewards count separately).
    """
    blocks, pos = [], 0
    while True:
        start = region.find(ANSWER_OPEN, pos)
        if start == -1:
            return blocks, False
        end = region.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end == -1:
            return blocks, True
        start = region.rfind(ANSWER_OPEN, start, end)
        blocks.append(region[start + len(ANSWER_OPEN):end])
        pos = end + len(ANSWER_CLOSE)


def _without_tags(text: str) -> str:
    for tag in (ANSWER_OPEN, ANSWER_CLOSE, THINK_OPEN, THINK_CLOSE):
        text = text.replace(tag, "\n")
    return text


# --------------------------------------------------------------------------------------------------
# Statements: "the answer is X", "Answer: X", \boxed{X}, "Option X is correct"
# --------------------------------------------------------------------------------------------------

_STATEMENT = re.compile(
    r"\b(?:"
    r"answer(?:\s+to\s+(?:this|the)\s+question)?(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be)\b"
    r"|\s*[:=])"
    r"|(?:correct|best|right|final|most\s+appropriate|most\s+likely)\s+(?:option|choice)"
    r"(?:\s+(?:is|would\s+be)\b|\s*[:=])"
    r"|(?:option|choice)\s*:"
    r")[ \t]*:?[ \t]*\n?",
    re.IGNORECASE,
)
# "Option B is correct", and "B is the correct answer" at the start of a line or sentence; a letter
# after any other word is left alone ("Vitamin D is the best option" names no option).
_LETTER_IS_CORRECT = re.compile(
    r"(?:\b(?:option|choice)\s+\(?([A-Z])\)?\s+is\s+(?:the\s+)?(?:correct|right|best)\b"
    r"|(?:^|[.,;!?:]\s+)[*_]*\(?([A-Z])\)?[*_]*\s+is\s+the\s+(?:correct|right|best)\s+(?:answer|option|choice)\b)",
    re.MULTILINE | re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\s*\{")
_TEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mathit)\s*\{|[{$]")
# A heading on its own line start ("## Final Response", "**Final Answer**"), as HuatuoGPT-o1 writes.
_FINAL_HEADING = re.compile(r"^[ \t#*_>]*final[ \t]+(?:response|answer)\b[ \t]*[:*_#]*[ \t]*",
                            re.IGNORECASE | re.MULTILINE)


def _boxed_content(text: str, start: int) -> str | None:
    """What \\boxed{ ... } holds (\\text{C}-style wrappers removed), or None when no brace closes it soon:
    a boxed answer is a letter or an option's text, and the bound keeps box spam linear."""
    segment = _TEX_WRAP.sub("", text[start:start + _BOX_CHARS])
    end = segment.find("}")
    return None if end == -1 else segment[:end]


def _statements(region: str, opts: _Options) -> list[tuple[int, Extraction]]:
    """Every explicit answer statement in `region`, as (position, extraction), in text order."""
    found: list[tuple[int, Extraction]] = []
    for m in _STATEMENT.finditer(region):
        slot = region[m.end():m.end() + _SLOT_CHARS].split("\n", 1)[0]
        if (ex := _parse_slot(slot, opts)) is not None:
            found.append((m.start(), ex._replace(rule=ex.rule or "answer_statement")))
    for m in _LETTER_IS_CORRECT.finditer(region):
        letter = (m.group(1) or m.group(2)).upper()
        ex = Extraction(letter, "answer_statement") if letter in opts.letters else Extraction(None, "not_an_option")
        found.append((m.start(), ex))
    for m in _BOXED.finditer(region):
        content = _boxed_content(region, m.end())
        if content is not None and (ex := _parse_slot(content, opts)) is not None:
            found.append((m.start(), ex._replace(rule=ex.rule or "boxed")))
    found.sort(key=lambda t: t[0])
    return found


def _option_text_anywhere(region: str, opts: _Options) -> Extraction | None:
    """The one option whose text appears in `region` (longer texts masked first), else None/ambiguous."""
    norm = _norm(region)
    hits = set()
    for text, letter in opts.texts:
        pattern = r"(?<!\w)" + re.escape(text) + r"(?!\w)"
        norm, count = re.subn(pattern, "\x00", norm)
        if count:
            hits.add(letter)
    if len(hits) == 1:
        return Extraction(hits.pop(), "option_text")
    return Extraction(None, "ambiguous") if hits else None


_BARE = re.compile(r"[\s*_`\"'“‘(\[{]*([A-Za-z])(?![A-Za-z0-9\-'’])[)\]}.:,;!?*_`\"'”’\s]*")


def _bare_letter(region: str, opts: _Options) -> Extraction | None:
    """The whole answer is one letter, maybe with punctuation and its own option text ("(c) Aspirin")."""
    stripped = region.strip()
    if len(stripped) > _SLOT_CHARS:
        return None
    m = _BARE.match(stripped)
    if not m:
        return None
    letter, rest = m.group(1).upper(), stripped[m.end():]
    if rest:
        text_letter, tail = _text_prefix(rest, opts)
        if text_letter is None or tail.strip(" .;:,!?\"'*_`)"):
            return None
        if text_letter != letter:
            return Extraction(None, "ambiguous")
    if letter not in opts.letters:
        return Extraction(None, "not_an_option")
    return Extraction(letter, "bare_letter")


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Analysis:
    final: Extraction
    answer_blocks: int
    explicit: tuple[Extraction, ...]  # every explicit answer outside thinking, in text order


def _analyse(text: Any, options: Any) -> _Analysis:
    if not isinstance(text, str) or not text.strip():
        return _Analysis(Extraction(None, "none"), 0, ())
    opts = _coerce_options(options) or _ANY_LETTER
    region, unclosed_think = _strip_think(text)
    blocks, unclosed_answer = _answer_blocks(region)
    plain = _without_tags(region)

    explicit: list[Extraction] = []
    block_results = []
    for content in blocks:
        ex = _parse_slot(_without_tags(content), opts) or _tag_fallback(_without_tags(content), opts)
        block_results.append(ex)
        explicit.append(ex)
    statements = _statements(plain, opts)
    explicit.extend(ex for _, ex in statements)

    def done(final: Extraction) -> _Analysis:
        return _Analysis(final, region.count(ANSWER_OPEN), tuple(explicit))

    if unclosed_think or unclosed_answer:
        return done(Extraction(None, "truncated"))
    if block_results:
        ex = block_results[-1]
        return done(ex._replace(rule=ex.rule or "answer_tag"))
    if statements:
        return done(statements[-1][1])
    headings = list(_FINAL_HEADING.finditer(plain))
    if headings:
        after = plain[headings[-1].end():]
        first_line = after.strip().split("\n", 1)[0]
        ex = _parse_slot(first_line, opts, strict=True) or _option_text_anywhere(after, opts)
        if ex is not None:
            rule = "final_heading" if ex.rule in ("", "option_text") else ex.rule
            explicit.append(ex._replace(rule=rule))
            return done(ex._replace(rule=rule))
    if (ex := _bare_letter(plain, opts)) is not None:
        explicit.append(ex)
        return done(ex)
    return done(_option_text_anywhere(plain, opts) or Extraction(None, "none"))


def _tag_fallback(content: str, opts: _Options) -> Extraction:
    """Inside <answer> but not a plain letter or text: a statement, or one option's text, or nothing."""
    if statements := _statements(content, opts):
        ex = statements[-1][1]
    else:
        ex = _option_text_anywhere(content, opts) or Extraction(None, "none")
    return ex._replace(rule="answer_tag") if ex.letter else ex


def extract_choice_with_rule(text: Any, options: Any) -> Extraction:
    """The option a completion chose, and the rule that found it; never raises, linear in len(text).

    Policy, in order of trust (the first source that names an answer decides):

    1. Thinking is not answering: text inside <think>...</think> is ignored. A </think> with no
       <think> before it ends reasoning that the chat template opened. A completion that ends inside an
       unclosed <think>, or whose last <answer> is never closed, was cut off: rule "truncated".
    2. "answer_tag": the content of the last <answer>...</answer> block. It is read as a letter, an
       option's text, or a statement inside it; when it names nothing the result is rule "none"
       (the model's explicit answer is unreadable; we do not look for another one).
    3. "answer_statement" / "boxed": the last of "the answer is X", "Answer: X", "final answer: X",
       "the correct option is X", "Option X is correct", "X is the correct answer", "\\boxed{X}".
       The last one wins: models revise ("Answer: A. Wait... the answer is B").
    4. "final_heading": the first line after a "Final Response" / "Final Answer" heading, read as a
       letter that stands alone, or else the one option whose text appears after the heading.
    5. "bare_letter": the whole completion is one letter, maybe with brackets, punctuation and its own
       option text: "B", "(c)", "c)", "**D**", "C. Aspirin".
    6. "option_text": exactly one option's text appears in the completion (longer texts are matched
       first, so "aspirin and clopidogrel" does not also count as "aspirin").

    Reading a slot (what follows "Answer:", a tag's content):
    - An option's own text, case-insensitive, counts as that option: "Answer: aspirin", and for
      PubMedQA "Answer: yes" is the letter of "yes".
    - Letters are case-insensitive and may carry brackets, periods, markdown and the option's text:
      "(c) Aspirin", "C. Aspirin", "c)", "**B**".
    - "a" and "I" are also English words. A lowercase letter counts only when the end of the text, a
      newline or punctuation follows it: "the answer is a." -> A, "Answer: a" -> A, but "the answer is
      a beta blocker" -> not A (then the option whose text is "beta blocker", if any). An uppercase
      letter followed by a word counts ("The answer is B because..."), except "I" followed by a
      lowercase word ("the answer is I think B" reads "I" as the pronoun).
    - Two answers in one slot are "ambiguous" (None): "A or B", "A, B", "A/B", "ABCD", or a letter
      with another option's text ("C. Warfarin" when warfarin is B).
    - A letter that is not an option ("E" on a four-option question) is "not_an_option" (None).

    Args:
        text: the completion; anything that is not a non-empty string gives rule "none".
        options: dict letter -> text (or a list of texts, or a JSON string of either). When they cannot
            be read, any letter A-Z is accepted and option texts are not used.

    Returns:
        `Extraction(letter, rule)`; `letter` is None for rules "none", "ambiguous", "truncated",
        "not_an_option".

    >>> extract_choice_with_rule("<think>B? no, C.</think><answer>C</answer>", {"A": "x", "B": "y", "C": "z"})
    Extraction(letter='C', rule='answer_tag')
    >>> extract_choice_with_rule("Answer: yes", {"A": "yes", "B": "no", "C": "maybe"})
    Extraction(letter='A', rule='answer_statement')
    >>> extract_choice_with_rule("The answer is E", {"A": "x", "B": "y", "C": "z", "D": "w"})
    Extraction(letter=None, rule='not_an_option')
    """
    return _analyse(text, options).final


def extract_choice(text: Any, options: Any) -> str | None:
    """The letter a completion chose, or None; see `extract_choice_with_rule` for the policy.

    >>> extract_choice("I think the answer is (b).", {"A": "aspirin", "B": "heparin"})
    'B'
    """
    return extract_choice_with_rule(text, options).letter


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
    analysis = _analyse(completion_text(completion), options)
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
    (`medr1.option_order`) the step's gold letters are balanced, so this pushes towards balance.

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
