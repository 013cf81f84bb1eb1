"""Answer extraction: which option a completion chose, and how that was read. The one contract that
rewards (training), scoring (evaluation) and results all use: if training and evaluation parsed answers
differently, a model could learn a format that the evaluation then reads as wrong, or the reverse.

`extract_choice_with_rule` reports *how* it matched (`Extraction.rule`), so an evaluation can give a
parse rate per rule instead of a single accuracy that hides format failures. Its policy (its docstring
spells it out) is strict on purpose: it never guesses. HuatuoGPT-o1's scorer falls back to a fuzzy match
that always produces some answer; ours returns None when the text does not name exactly one option, so
"no answer" is never counted as a lucky guess. The tags come from `medr1.task.prompts` and the letters from
`medr1.data.schema`, so instruction, record and parser cannot disagree. No torch or transformers here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from medr1.data.schema import LETTERS, MAX_OPTIONS
from medr1.task.prompts import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

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
_LETTER_RUN = re.compile(rf"[(\[{{]?([A-Z]{{2,{MAX_OPTIONS}}})(?![A-Za-z0-9])")
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
class Analysis:
    """Everything extraction saw: the final answer, the <answer> blocks, every explicit answer (rewards)."""

    final: Extraction
    answer_blocks: int
    explicit: tuple[Extraction, ...]  # every explicit answer outside thinking, in text order


def analyse(text: Any, options: Any) -> Analysis:
    """The full reading behind `extract_choice_with_rule`; rewards use it to refuse hedged answers."""
    if not isinstance(text, str) or not text.strip():
        return Analysis(Extraction(None, "none"), 0, ())
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

    def done(final: Extraction) -> Analysis:
        return Analysis(final, region.count(ANSWER_OPEN), tuple(explicit))

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
    return analyse(text, options).final


def extract_choice(text: Any, options: Any) -> str | None:
    """The letter a completion chose, or None; see `extract_choice_with_rule` for the policy.

    >>> extract_choice("I think the answer is (b).", {"A": "aspirin", "B": "heparin"})
    'B'
    """
    return extract_choice_with_rule(text, options).letter
