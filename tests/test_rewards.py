"""Tests for medr1.rewards: the extraction policy rule by rule, each reward and its hacking guards, and
property tests (never raises, stays in [0, 1], a conflicting answer never helps).

Cases are tables with one comment each (TRL tests/test_rewards.py style); the extraction tables also pin
the rule name, because evaluation reports parse rates per rule.
"""

import json
import math
import string
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medr1.data import Question
from medr1.prompts import ANSWER_FORMATS, TEMPLATES, build_messages
from medr1.rewards import (
    EXPLICIT_RULES,
    REWARD_FUNCS,
    REWARD_RANGES,
    RULES,
    Extraction,
    accuracy,
    answer_parsable,
    completion_text,
    extract_choice,
    extract_choice_with_rule,
    format_reward,
    format_shaped,
    get_reward_funcs,
    register,
    validate_reward_config,
)

DRUGS = {"A": "Aspirin", "B": "Warfarin", "C": "Beta blocker", "D": "Aspirin and clopidogrel"}
YNM = {"A": "yes", "B": "no", "C": "maybe"}


# --------------------------------------------------------------------------------------------------
# Extraction: one table per source, in the order of trust
# --------------------------------------------------------------------------------------------------

EXTRACTION_CASES = [
    # --- answer tag ---
    ("<answer>C</answer>", DRUGS, "C", "answer_tag"),  # the format the r1 template asks for
    ("<think>B? no.</think>\n<answer>C</answer>", DRUGS, "C", "answer_tag"),  # thinking ignored
    ("<answer> (c) </answer>", DRUGS, "C", "answer_tag"),  # lowercase letter in brackets
    ("<answer>C. Beta blocker</answer>", DRUGS, "C", "answer_tag"),  # letter with its own text
    ("<answer>**C**</answer>", DRUGS, "C", "answer_tag"),  # markdown emphasis
    ("<answer>Beta blocker</answer>", DRUGS, "C", "answer_tag"),  # the option's text alone
    ("<answer>The answer is B</answer>", DRUGS, "B", "answer_tag"),  # a statement inside the tag
    ("<answer>A</answer> then <answer>B</answer>", DRUGS, "B", "answer_tag"),  # last tag wins (reward: 0)
    ("The answer is A.\n<answer>B</answer>", DRUGS, "B", "answer_tag"),  # the tag outranks statements
    ("<answer></answer> The answer is B", DRUGS, None, "none"),  # empty tag: unreadable, no fallback
    ("reasoning the template opened </think><answer>D</answer>", DRUGS, "D", "answer_tag"),  # R1-distill
    ("<think>a<think>b</think>c</think><answer>A</answer>", DRUGS, "A", "answer_tag"),  # nested thinking
    # --- statements ---
    ("The answer is B.", DRUGS, "B", "answer_statement"),  # the usual phrasing
    ("Answer: D", DRUGS, "D", "answer_statement"),  # the letter template's format
    ("ANSWER: d", DRUGS, "D", "answer_statement"),  # case-insensitive
    ("Answer:\nB", DRUGS, "B", "answer_statement"),  # letter on the next line
    ("Final answer: **B**", DRUGS, "B", "answer_statement"),  # markdown
    ("The correct option is (D).", DRUGS, "D", "answer_statement"),  # "correct option is"
    ("The answer is option C", DRUGS, "C", "answer_statement"),  # "option" before the letter
    ("The answer is B because warfarin prevents emboli.", DRUGS, "B", "answer_statement"),  # reason follows
    ("Option B is correct.", DRUGS, "B", "answer_statement"),  # letter before "is correct"
    ("So, C is the correct answer.", DRUGS, "C", "answer_statement"),  # "X is the correct answer"
    ("Vitamin D is the best option here.", DRUGS, None, "none"),  # a vitamin, not option D
    ("Answer: A. Wait, actually the answer is B.", DRUGS, "B", "answer_statement"),  # last one wins
    ("Answer: Warfarin", DRUGS, "B", "answer_statement"),  # option text in the statement
    ("Answer: aspirin and clopidogrel", DRUGS, "D", "answer_statement"),  # longest text wins over "aspirin"
    ("Answer: C. Beta blocker", DRUGS, "C", "answer_statement"),  # letter and its own text
    ("The answer is not A", DRUGS, None, "none"),  # a negation names no answer
    ("\\boxed{C}", DRUGS, "C", "boxed"),  # LaTeX box
    ("so \\boxed{\\text{(B)}}", DRUGS, "B", "boxed"),  # \text{} inside the box
    ("\\boxed{A} ... on reflection the answer is C", DRUGS, "C", "answer_statement"),  # last wins across kinds
    # --- "a" and "I" are words too ---
    ("the answer is a", DRUGS, "A", "answer_statement"),  # lowercase letter at the end
    ("the answer is a.", DRUGS, "A", "answer_statement"),  # lowercase letter before punctuation
    ("Answer: a", DRUGS, "A", "answer_statement"),  # lowercase after the colon
    ("the answer is a beta blocker", DRUGS, "C", "answer_statement"),  # article: the text decides
    ("The answer is A beta blocker", DRUGS, "C", "answer_statement"),  # capitalised article, same
    ("The answer is A because it is cheap", DRUGS, "A", "answer_statement"),  # uppercase letter + reason
    ("the answer is a difficult one", DRUGS, None, "none"),  # article before no option: nothing
    ("The answer is I think B", DRUGS, None, "none"),  # "I" + lowercase word is the pronoun
    ("Answer: I", {L: f"t{L}" for L in "ABCDEFGHIJ"}, "I", "answer_statement"),  # option I alone counts
    # --- final heading (HuatuoGPT-o1 writes "## Thinking" / "## Final Response") ---
    ("## Thinking\nhmm\n## Final Response\nC. Beta blocker", DRUGS, "C", "final_heading"),
    ("## Final Response\n\nWarfarin is indicated.", DRUGS, "B", "final_heading"),  # option text after it
    ("## Final Response\nA 60-year-old needs warfarin.", DRUGS, "B", "final_heading"),  # "A 60" is not A
    ("**Final Answer**\n(b)", DRUGS, "B", "final_heading"),  # bold heading
    # --- bare letter ---
    ("B", DRUGS, "B", "bare_letter"),  # just the letter
    ("  (c)\n", DRUGS, "C", "bare_letter"),  # brackets and whitespace
    ("c)", DRUGS, "C", "bare_letter"),  # closing bracket only
    ("**D**.", DRUGS, "D", "bare_letter"),  # markdown and period
    ("C. Beta blocker", DRUGS, "C", "bare_letter"),  # letter with its own text
    ("a", DRUGS, "A", "bare_letter"),  # a lone "a" is the letter
    # --- option text anywhere ---
    ("I would give warfarin here.", DRUGS, "B", "option_text"),  # exactly one option's text appears
    ("aspirin and clopidogrel is best", DRUGS, "D", "option_text"),  # "aspirin" inside D's text not counted
    ("Yes.", YNM, "A", "option_text"),  # PubMedQA words are option texts
    # --- yes / no / maybe statements ---
    ("Answer: yes", YNM, "A", "answer_statement"),  # the word names the option
    ("The answer is no.", YNM, "B", "answer_statement"),  # "no" is option B's text
    ("<answer>maybe</answer>", YNM, "C", "answer_tag"),  # in the tag too
    ("Answer: c", YNM, "C", "answer_statement"),  # letters still work
    # --- ambiguous: two answers in the deciding statement ---
    ("Answer: A or B", DRUGS, None, "ambiguous"),  # "or"
    ("Answer: A, B", DRUGS, None, "ambiguous"),  # comma list
    ("Answer: A/B", DRUGS, None, "ambiguous"),  # slash
    ("Answer: B and C", DRUGS, None, "ambiguous"),  # "and"
    ("Answer: ABCD", DRUGS, None, "ambiguous"),  # every letter as one word
    ("<answer>A B C D</answer>", DRUGS, None, "ambiguous"),  # every letter, spaced
    ("Answer: C. Warfarin", DRUGS, None, "ambiguous"),  # letter contradicts the text (warfarin is B)
    ("Answer: aspirin or warfarin", DRUGS, None, "ambiguous"),  # two option texts
    ("C. Aspirin", DRUGS, None, "ambiguous"),  # bare letter with another option's text
    ("aspirin or warfarin", DRUGS, None, "ambiguous"),  # two option texts, no statement
    ("Answer: B. A is wrong because it bleeds.", DRUGS, "B", "answer_statement"),  # a new sentence is fine
    ("Answer: B, because it works", DRUGS, "B", "answer_statement"),  # comma then a word is fine
    # --- not an option ---
    ("The answer is E", DRUGS, None, "not_an_option"),  # E on a 4-option question
    ("F", DRUGS, None, "not_an_option"),  # bare letter outside the options
    ("<answer>Z</answer>", YNM, None, "not_an_option"),  # in a tag too
    # --- truncated ---
    ("<think>The answer is B", DRUGS, None, "truncated"),  # cut off while thinking
    ("<think>x</think><answer>B", DRUGS, None, "truncated"),  # answer tag never closed
    ("Answer: B <think>let me reconsider", DRUGS, None, "truncated"),  # ends inside a new thinking block
    # --- nothing ---
    ("<think>The answer is B</think>", DRUGS, None, "none"),  # an answer only inside thinking
    ("I am not sure.", DRUGS, None, "none"),  # no answer at all
    ("", DRUGS, None, "none"),  # empty
    ("   \n\t", DRUGS, None, "none"),  # whitespace only
]


@pytest.mark.parametrize("text, options, letter, rule", EXTRACTION_CASES)
def test_extract_choice_with_rule(text, options, letter, rule):
    assert extract_choice_with_rule(text, options) == Extraction(letter, rule)
    assert extract_choice(text, options) == letter


@pytest.mark.parametrize(
    "options, text, expected",
    [
        (json.dumps(DRUGS), "Answer: Warfarin", "B"),  # JSON string of the options (the dataset column)
        (list(DRUGS.values()), "Answer: Warfarin", "B"),  # list of texts, letters A.. in order
        ({"a": "x", "b": "y"}, "Answer: B", "B"),  # lowercase keys
        (None, "Answer: Q", "Q"),  # unreadable options: any letter A-Z, no texts
        ("not json", "Answer: B", "B"),  # same
        ('"a json string"', "Answer: B", "B"),  # JSON but not a dict
        ({"AB": "x"}, "Answer: B", "B"),  # keys that are not letters: options ignored
        ({}, "Answer: B", "B"),  # no options at all
    ],
)
def test_options_forms(options, text, expected):
    assert extract_choice(text, options) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,  # no completion
        123,  # not a string
        b"Answer: B",  # bytes are not decoded
        ["Answer: B"],  # a list is not a completion text
        "\x00\x01\x1b[31mAnswer:\x7f B\u200b",  # control and zero-width characters
        "答案：B，因为华法林",  # non-ASCII
        "<answer><think></answer></think>",  # interleaved tags
        "</answer></answer><answer><answer>",  # unbalanced tags
        "\\boxed{" * 50,  # unclosed boxes
        "\ud800",  # lone surrogate
    ],
)
def test_extraction_never_raises_on_odd_input(text):
    result = extract_choice_with_rule(text, DRUGS)
    assert result.rule in RULES
    assert result.letter is None or result.letter in DRUGS


@pytest.mark.parametrize(
    "text",
    [
        "answer: " * 12_500,  # statement after statement, none readable
        "<think>" * 14_000,  # unclosed thinking blocks
        "</think>" * 12_000 + "<think>",  # stray closes then an open
        "<answer>" * 12_000 + "</answer>",  # nested opens
        "(" * 100_000,  # brackets only
        "A" * 100_000,  # one long run of a letter
        "a " * 50_000,  # articles
        "\\boxed{" * 14_000,  # boxes
        "The answer is A or " * 5_000,  # long ambiguity
        "aspirin " * 12_500,  # option text repeated
        "x" * 99_990 + "\nAnswer: B",  # the answer at the very end
        ("Answer: B" + " " * 300 + ".\n") * 300,  # long blank runs after a letter (once took 30 s)
        ("Answer: B," + " \t" * 150 + ")\n") * 300,  # blanks around a joiner
        "B\\boxed{" * 12_000,  # boxes that never close
        " or answer is" * 7_500,  # statements that are all joiners
    ],
)
def test_extraction_is_fast_on_100k_characters(text):
    start = time.perf_counter()
    extract_choice_with_rule(text, DRUGS)
    accuracy([text], answer=["B"], options_json=[json.dumps(DRUGS)])
    assert time.perf_counter() - start < 1.0


def test_answer_at_the_end_of_a_long_text_is_found():
    assert extract_choice("x" * 99_990 + "\nAnswer: B", DRUGS) == "B"


# --------------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------------

OPTS = json.dumps(DRUGS)


def _score(fn, completions, gold="B", options=OPTS):
    n = len(completions)
    return fn(completions, answer=[gold] * n, options_json=[options] * n)


ACCURACY_CASES = [
    ("<think>warfarin prevents emboli</think><answer>B</answer>", 1.0),  # right, well formed
    ("<think>...</think><answer>A</answer>", 0.0),  # wrong letter
    ("Answer: B", 1.0),  # statement format (letter templates)
    ("answer: b", 1.0),  # case-insensitive
    ("<answer>Warfarin</answer>", 1.0),  # option text in the tag
    ("I would give warfarin.", 1.0),  # one option's text: extraction reads it, so does the reward
    # Reward-hacking guards:
    ("<answer>A</answer><answer>B</answer>", 0.0),  # two answer blocks, even if the last is right
    ("<answer>B</answer><answer>B</answer>", 0.0),  # two blocks, same letter: still not one answer
    ("Answer: A ... Answer: B", 0.0),  # two statements naming different letters
    ("<answer>B</answer> The answer is A", 0.0),  # tag and statement disagree
    ("Answer: A or B. Answer: B", 0.0),  # a hedge, then the right letter
    ("<think>The answer is B</think>", 0.0),  # an answer only inside thinking
    ("<think>The answer is B</think><answer>A</answer>", 0.0),  # thinking's letter does not count
    ("<think>Maybe A.</think><answer>B</answer>", 1.0),  # revisions inside thinking are fine
    ("<answer>ABCD</answer>", 0.0),  # every letter
    ("Answer: A, B, C, D", 0.0),  # every letter, listed
    ("A. Aspirin B. Warfarin C. Beta blocker D. Aspirin and clopidogrel", 0.0),  # every option's text
    ("", 0.0),  # empty
    ("<think>Warfarin, so the answer is B", 0.0),  # truncated while thinking
    ("<think>x</think><answer>B", 0.0),  # truncated answer tag
    ("<answer>B<answer>A</answer>", 0.0),  # an unclosed answer before another
    (None, 0.0),  # no completion
    ("The answer is E", 0.0),  # not an option
]


@pytest.mark.parametrize("completion, expected", ACCURACY_CASES)
def test_accuracy(completion, expected):
    assert _score(accuracy, [completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ([{"role": "assistant", "content": "<answer>B</answer>"}], 1.0),  # conversational completion
        ([{"role": "assistant", "content": [{"type": "text", "text": "Answer: B"}]}], 1.0),  # content parts
        ([{"role": "assistant", "content": None}], 0.0),  # no content
        ([{"role": "user", "content": "Answer: B"}], 0.0),  # only assistant turns are the completion
        ([], 0.0),  # no messages
        (42, 0.0),  # not a completion at all
    ],
)
def test_accuracy_on_conversational_completions(completion, expected):
    assert _score(accuracy, [completion]) == [expected]


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("B", 1.0),  # the gold letter
        ("b", 1.0),  # lowercase gold
        (" B ", 1.0),  # padded gold
        ("C", 0.0),  # another letter
        (None, 0.0),  # missing gold for one row
        ("", 0.0),  # empty gold
    ],
)
def test_accuracy_gold_forms(gold, expected):
    assert accuracy(["Answer: B"], answer=[gold], options_json=[OPTS]) == [expected]


def test_accuracy_requires_the_answer_column():
    with pytest.raises(ValueError, match="'answer'"):
        accuracy(["Answer: B"], options_json=[OPTS])


def test_accuracy_rejects_a_column_of_the_wrong_length():
    with pytest.raises(ValueError, match="3 values for 2 completions"):
        accuracy(["Answer: B", "Answer: A"], answer=["B", "A", "C"])


def test_accuracy_without_options_accepts_letters():
    # Without options_json any letter A-Z counts; extra TRL columns (prompt, id) are ignored.
    assert accuracy(["Answer: B", "Answer: Q"], answer=["B", "Q"], prompt=["p", "p"], id=["1", "2"]) == [1.0, 1.0]


FORMAT_CASES = [
    ("<think>reasoning</think><answer>B</answer>", 1.0),  # the format
    ("\n<think>\nreasoning\n</think>\n\n<answer>\nB\n</answer>\n", 1.0),  # whitespace around and between
    ("<think></think><answer>B</answer>", 1.0),  # empty thinking is allowed (Qwen3 non-thinking mode)
    ("<think>x</think><answer> </answer>", 0.0),  # empty answer
    ("<answer>B</answer>", 0.0),  # no thinking
    ("<think>x</think>", 0.0),  # no answer
    ("<think>x</think>B", 0.0),  # answer without tags
    ("<answer>B</answer><think>x</think>", 0.0),  # wrong order
    ("<think>x</think> so: <answer>B</answer>", 0.0),  # text between the blocks
    ("<think>x</think><answer>B</answer> Hope this helps!", 0.0),  # text after the answer
    ("Sure! <think>x</think><answer>B</answer>", 0.0),  # text before the thinking
    ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),  # two answers
    ("<think>a</think><think>b</think><answer>B</answer>", 0.0),  # two thinking blocks
    ("<think>x<answer>A</answer></think><answer>B</answer>", 0.0),  # an answer tag inside thinking
    ("<think>x</think><answer>B", 0.0),  # truncated
    ("", 0.0),  # empty
    (None, 0.0),  # no completion
]


@pytest.mark.parametrize("completion, expected", FORMAT_CASES)
def test_format(completion, expected):
    assert format_reward([completion]) == [expected]


def test_format_ignores_the_answer_being_wrong():
    assert _score(format_reward, ["<think>x</think><answer>A</answer>"]) == [1.0]


PARSABLE_CASES = [
    ("Answer: A", 1.0),  # wrong but parsable: this is what the tiny model is paid for first
    ("Answer: B", 1.0),  # right and parsable
    ("<answer>C</answer>", 1.0),  # tag
    ("D", 1.0),  # bare letter
    ("\\boxed{B}", 1.0),  # boxed
    ("I would give warfarin.", 0.0),  # an option's text is not a stated answer
    ("Answer: E", 0.0),  # not an option
    ("Answer: A or B", 0.0),  # hedge
    ("Answer: A ... Answer: B", 0.0),  # two answers
    ("The patient is old.", 0.0),  # nothing
    ("", 0.0),  # empty
]


@pytest.mark.parametrize("completion, expected", PARSABLE_CASES)
def test_answer_parsable(completion, expected):
    assert answer_parsable([completion], options_json=[OPTS]) == [expected]


SHAPED_CASES = [
    ("<think>x</think><answer>B</answer>", 1.0),  # four tags and a parsable answer
    ("<think>x</think><answer>B", 0.375),  # three tags, truncated answer
    ("<think>x</think> Answer: B", 0.75),  # two tags and a parsable statement
    ("Answer: A", 0.5),  # parsable answer, no tags
    ("<think>x", 0.125),  # one tag
    ("<think><think></think></think>", 0.0),  # repeated tags earn nothing
    ("", 0.0),  # empty
]


@pytest.mark.parametrize("completion, expected", SHAPED_CASES)
def test_format_shaped(completion, expected):
    assert format_shaped([completion], options_json=[OPTS]) == [expected]


def test_shaped_rewards_separate_a_tiny_models_group():
    # The demo's premise: in a group where 1 answer in 4 parses, accuracy alone can be all zeros, while
    # answer_parsable still differs within the group, so GRPO has an advantage to follow.
    group = ["The heart is a muscle.", "Answer: A", "warfarin is a drug and aspirin", "I think that"]
    assert _score(accuracy, group) == [0.0, 0.0, 0.0, 0.0]
    assert len(set(_score(answer_parsable, group))) > 1


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_names_match_function_names():
    # TRL logs each reward as rewards/<__name__>; logs must use the names the config uses.
    assert {"accuracy", "format", "answer_parsable", "format_shaped"} <= set(REWARD_FUNCS)
    for name, fn in REWARD_FUNCS.items():
        assert fn.__name__ == name


def test_get_reward_funcs_in_order():
    assert get_reward_funcs(["format", "accuracy"]) == [format_reward, accuracy]
    assert get_reward_funcs("accuracy") == [accuracy]


def test_get_reward_funcs_unknown_lists_known():
    with pytest.raises(ValueError, match="unknown reward function") as err:
        get_reward_funcs(["accuracy", "acuracy"])
    assert "acuracy" in str(err.value) and "answer_parsable" in str(err.value)


def test_register_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register("accuracy")(lambda completions, **kw: [])


@pytest.mark.parametrize(
    "names, weights, message",
    [
        (["accuracy", "format"], [1.0, 1.0, 1.0], "one weight per reward"),  # lengths differ
        (["accuracy", "format"], [1.0, float("nan")], "finite"),  # NaN weight
        (["accuracy", "format"], [1.0, math.inf], "finite"),  # infinite weight
        (["accuracy", "format"], [1.0, "1"], "finite"),  # a string is not a number
        (["accuracy", "format"], [True, 1.0], "finite"),  # nor is a bool
        (["accuracy", "format"], [0, 0.0], "all zero"),  # nothing to learn from
        (["accuracy", "nope"], None, "unknown reward"),  # unknown name
        (["accuracy", "accuracy"], None, "repeats"),  # duplicate: TRL logs would collide
        ([], None, "non-empty"),  # no rewards
        ("accuracy", None, "non-empty list"),  # a bare string, not a list
    ],
)
def test_validate_reward_config_errors(names, weights, message):
    with pytest.raises(ValueError, match=message):
        validate_reward_config(names, weights)


@pytest.mark.parametrize(
    "names, weights",
    [
        (["accuracy", "format"], None),  # TRL default: all weights 1
        (["accuracy", "answer_parsable"], [1.0, 0.5]),  # the demo recipe
        (["accuracy"], [2]),  # ints are numbers
    ],
)
def test_validate_reward_config_accepts(names, weights):
    validate_reward_config(names, weights)


# --------------------------------------------------------------------------------------------------
# Prompts and rewards agree
# --------------------------------------------------------------------------------------------------

ANSWER_IN_FORMAT = {
    "tags": "<think>Warfarin prevents emboli.</think>\n<answer>{L}</answer>",
    "statement": "Warfarin prevents emboli.\nAnswer: {L}",
    "free": "## Thinking\nWarfarin prevents emboli.\n## Final Response\nThe answer is {L}.",
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_templates_format_is_read_by_its_rewards(name):
    # A completion that follows a template's instructions scores 1 on every reward that template names.
    tpl = TEMPLATES[name]
    assert set(ANSWER_IN_FORMAT) == set(ANSWER_FORMATS)
    completion = ANSWER_IN_FORMAT[tpl.answer_format].format(L="B")
    for fn in get_reward_funcs(tpl.reward_funcs):
        assert _score(fn, [completion]) == [1.0], fn.__name__


def test_question_to_reward_columns_round_trip():
    q = Question("q", "Which drug?", DRUGS, "D", "toy")
    assert "D. Aspirin and clopidogrel" in build_messages(q, "letter")[0]["content"]
    assert accuracy(["Answer: D"], answer=[q.answer], options_json=[json.dumps(q.options)]) == [1.0]


def test_rewards_and_prompts_do_not_import_torch():
    code = ("import sys, medr1.prompts, medr1.rewards; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "Answer: ", "the answer is ", "\\boxed{", "}",
    "## Final Response\n", "A", "b", "C", "E", "a ", "I ", "(", ")", ".", ",", " or ", " and ", "\n", " ",
    "yes", "no", "maybe", "Aspirin", "warfarin", "Option ", " is correct", "\x00", "\u00e9", "答案",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=30).map("".join)


@st.composite
def options_dicts(draw):
    n = draw(st.integers(2, 26))
    words = st.one_of(st.sampled_from(["yes", "no", "maybe", "Aspirin", "Warfarin", "a", "B", ""]),
                      st.text(max_size=12))
    return {L: draw(words) for L in string.ascii_uppercase[:n]}


PROPERTY_SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(text=st.one_of(texts, st.text()), options=st.one_of(options_dicts(), st.none(), st.text(max_size=5)))
def test_extraction_never_raises(text, options):
    result = extract_choice_with_rule(text, options)
    assert result.rule in RULES
    if result.letter is not None:
        assert result.rule in (*EXPLICIT_RULES, "option_text")
        if isinstance(options, dict):
            assert result.letter in options


@PROPERTY_SETTINGS
@given(completion=st.one_of(texts, st.none(), st.integers(),
                            texts.map(lambda t: [{"role": "assistant", "content": t}])),
       options=options_dicts(), data=st.data())
def test_rewards_never_raise_and_stay_in_unit_interval(completion, options, data):
    gold = data.draw(st.sampled_from(list(options)))
    for fn in REWARD_FUNCS.values():
        (value,) = fn([completion], answer=[gold], options_json=[json.dumps(options)])
        assert REWARD_RANGES[fn.__name__][0] <= value <= REWARD_RANGES[fn.__name__][1], fn.__name__


@PROPERTY_SETTINGS
@given(options=options_dicts(), data=st.data(), thinking=st.text().filter(lambda t: "<" not in t))
def test_gold_letter_in_the_answer_tag_scores_one(options, data, thinking):
    gold = data.draw(st.sampled_from(list(options)))
    for completion in (f"<answer>{gold}</answer>", f"<think>{thinking}</think><answer>{gold}</answer>"):
        assert accuracy([completion], answer=[gold], options_json=[json.dumps(options)]) == [1.0]
    assert format_reward([f"<think>{thinking}</think><answer>{gold}</answer>"]) == [1.0]


@PROPERTY_SETTINGS
@given(text=texts, options=options_dicts(), data=st.data())
def test_appending_a_conflicting_answer_never_raises_accuracy(text, options, data):
    gold = data.draw(st.sampled_from(list(options)))
    other = data.draw(st.sampled_from([letter for letter in options if letter != gold]))
    suffix = data.draw(st.sampled_from([f"\nAnswer: {other}", f"<answer>{other}</answer>", f"\\boxed{{{other}}}",
                                        f" The answer is {other}."]))
    kwargs = {"answer": [gold], "options_json": [json.dumps(options)]}
    assert accuracy([text + suffix], **kwargs)[0] <= accuracy([text], **kwargs)[0]


def test_completion_text_joins_assistant_turns():
    msgs = [{"role": "assistant", "content": "a"}, {"role": "tool", "content": "x"},
            {"role": "assistant", "content": "b"}]
    assert completion_text(msgs) == "a\nb"
    assert completion_text({"role": "assistant", "content": "c"}) == "c"


@pytest.mark.parametrize(
    "completions, kwargs, expected",
    [
        (None, {"answer": []}, []),  # no completions at all
        ([], {"answer": []}, []),  # an empty batch
        (["Answer: B", "B"], {"answer": "B"}, [1.0, 1.0]),  # one gold letter for the whole batch
        (("Answer: B",), {"answer": ("B",), "options_json": (OPTS,)}, [1.0]),  # tuples are columns too
    ],
)
def test_accuracy_batch_shapes(completions, kwargs, expected):
    assert accuracy(completions, **kwargs) == expected
