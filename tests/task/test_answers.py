"""Tests for medr1.task.answers: the extraction policy rule by rule, the forms options come in, odd and huge
inputs, and a property test (never raises, only returns rules it names, only letters among the options).

Cases are tables with one comment each (TRL tests/test_rewards.py style); the extraction tables also pin
the rule name, because evaluation reports parse rates per rule.
"""

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import PROPERTY_SETTINGS, options_dicts, texts

from medr1.task.answers import EXPLICIT_RULES, RULES, Extraction, extract_choice, extract_choice_with_rule
from medr1.task.rewards import accuracy

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
# Properties
# --------------------------------------------------------------------------------------------------



@PROPERTY_SETTINGS
@given(text=st.one_of(texts, st.text()), options=st.one_of(options_dicts(), st.none(), st.text(max_size=5)))
def test_extraction_never_raises(text, options):
    result = extract_choice_with_rule(text, options)
    assert result.rule in RULES
    if result.letter is not None:
        assert result.rule in (*EXPLICIT_RULES, "option_text")
        if isinstance(options, dict):
            assert result.letter in options
