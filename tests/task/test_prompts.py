"""Tests for medr1.task.prompts: template registry, question rendering, chat messages.

The huatuo template is checked character for character against HuatuoGPT-o1's evaluation prompt,
because comparing with their numbers only means something if the prompt is theirs.
"""

import string
from types import SimpleNamespace

import pytest

from medr1.data import Question
from medr1.task import prompts
from medr1.task.prompts import (
    ANSWER_CLOSE,
    ANSWER_FORMATS,
    ANSWER_OPEN,
    TEMPLATES,
    THINK_CLOSE,
    THINK_OPEN,
    PromptTemplate,
    build_messages,
    get_template,
    render_question,
)
from medr1.task.rewards import REWARD_FUNCS

MEDQA = Question("q1", "Which drug prevents stroke in atrial fibrillation?",
                 {"A": "Aspirin", "B": "Warfarin", "C": "Metoprolol", "D": "Digoxin"}, "B", "toy")
PUBMEDQA = Question("p1", "Does X cause Y?", {"A": "yes", "B": "no", "C": "maybe"}, "A", "pubmedqa-pqal",
                    meta={"context": "We followed 100 patients exposed to X."})


def test_tags_are_the_single_source_of_truth():
    assert (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE) == ("<think>", "</think>", "<answer>", "</answer>")
    assert prompts.THINK_TAGS == (THINK_OPEN, THINK_CLOSE)
    assert prompts.ANSWER_TAGS == (ANSWER_OPEN, ANSWER_CLOSE)


@pytest.mark.parametrize(
    "name, answer_format, has_system",
    [
        ("r1", "tags", True),  # paper recipe: system prompt with the tag instructions
        ("huatuo", "free", False),  # HuatuoGPT-o1 sends one user message and asks for no format
        ("letter", "statement", False),  # tiny-model demo: plain "Answer: X"
        ("letter_think", "statement", False),  # brief reasoning, then "Answer: X"
    ],
)
def test_templates_declare_their_answer_format(name, answer_format, has_system):
    tpl = get_template(name)
    assert tpl.name == name
    assert tpl.answer_format == answer_format
    assert (tpl.system is not None) == has_system


def test_format_rewards_are_registered_and_name_real_formats():
    # A format-bound reward whose name drifts from the registry would never be checked against a template.
    from medr1.task.prompts import FORMAT_REWARDS

    for tpl in TEMPLATES.values():
        assert tpl.answer_format in ANSWER_FORMATS
    assert set(FORMAT_REWARDS) <= set(REWARD_FUNCS) and set(FORMAT_REWARDS.values()) <= set(ANSWER_FORMATS)


def test_r1_system_prompt_uses_the_tag_constants():
    system = get_template("r1").system
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        assert tag in system
    assert "letter" in system


@pytest.mark.parametrize("bad", ["R1", "qwen", "", None, 3])
def test_get_template_unknown_lists_known_names(bad):
    with pytest.raises(ValueError, match="unknown prompt template") as err:
        get_template(bad)
    for name in TEMPLATES:
        assert name in str(err.value)


def test_get_template_passes_a_template_through():
    tpl = PromptTemplate("custom", None, "{question}\n{options}", "statement", ("accuracy",), "test")
    assert get_template(tpl) is tpl
    assert build_messages(MEDQA, tpl)[0]["content"].startswith("Which drug")


def test_template_rejects_unknown_answer_format():
    with pytest.raises(ValueError, match="answer_format"):
        PromptTemplate("bad", None, "{question}", "xml", (), "")


def test_huatuo_prompt_is_theirs_word_for_word():
    # HuatuoGPT-o1 evaluation/eval.py: "Please answer the following multiple-choice question:\n{question}\n
    # {option_str}" with option_str = "\n".join(f"{op}. {ans}"), sent as the only (user) message.
    assert build_messages(MEDQA, "huatuo") == [{
        "role": "user",
        "content": "Please answer the following multiple-choice question:\n"
                   "Which drug prevents stroke in atrial fibrillation?\n"
                   "A. Aspirin\nB. Warfarin\nC. Metoprolol\nD. Digoxin",
    }]


def test_render_question_puts_pubmedqa_context_first():
    assert render_question(PUBMEDQA) == (
        "Context: We followed 100 patients exposed to X.\nQuestion: Does X cause Y?\nA. yes\nB. no\nC. maybe"
    )


@pytest.mark.parametrize(
    "meta",
    [
        {},  # MedQA and most benchmarks: no context
        {"context": ""},  # empty context is no context
        {"context": "   \n"},  # whitespace too
        {"subject": "cardiology"},  # other meta is not rendered
    ],
)
def test_render_question_without_context(meta):
    q = SimpleNamespace(question="2+2?", options={"A": "3", "B": "4"}, meta=meta)
    assert render_question(q) == "2+2?\nA. 3\nB. 4"


def test_r1_messages_have_system_then_user():
    msgs = build_messages(MEDQA, "r1")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == render_question(MEDQA)


def test_default_template_is_r1():
    assert build_messages(MEDQA) == build_messages(MEDQA, "r1")


@pytest.mark.parametrize(
    "template, expected_tail",
    [
        # The instruction names the letters as a choice ("A, B, C or D"), and the one-line format.
        ("letter", 'Reply with one short line: "Answer: X", where X is the letter of the correct option '
                   "(A, B, C or D)."),
        ("letter_think", 'Think briefly (two or three sentences), then finish with one line: "Answer: X", '
                         "where X is the letter of the correct option (A, B, C or D)."),
    ],
)
def test_letter_templates_ask_for_an_answer_line(template, expected_tail):
    msgs = build_messages(MEDQA, template)
    assert len(msgs) == 1
    assert msgs[0]["content"].startswith(render_question(MEDQA) + "\n\n")
    assert msgs[0]["content"].endswith(expected_tail)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 26])
def test_build_messages_handles_2_to_26_options(n):
    letters = string.ascii_uppercase[:n]
    q = Question("x", "Pick one.", {L: f"option {L}" for L in letters}, letters[-1], "toy")
    for name, tpl in TEMPLATES.items():
        content = build_messages(q, name)[-1]["content"]
        for L in letters:  # unlettered templates (option_text) list the same texts, in the same order
            assert (f"\n{L}. option {L}" if tpl.lettered else f"\n- option {L}") in content
    if n == 2:
        assert "(A or B)" in build_messages(q, "letter")[0]["content"]


@pytest.mark.parametrize(
    "options",
    [
        {"A": "only one"},  # fewer than 2 options
        {L: L for L in string.ascii_uppercase} | {"AA": "27th"},  # more than 26
        ["A", "B"],  # not a dict
    ],
)
def test_build_messages_rejects_bad_option_counts(options):
    q = SimpleNamespace(question="?", options=options, meta={})
    with pytest.raises(ValueError, match="option"):
        build_messages(q, "r1")


def test_braces_in_question_text_are_kept_verbatim():
    # The question is a format *value*, never re-parsed as a pattern: "{x}" in a stem must survive.
    q = Question("b", "Given {x} and {0}, what is {y}?", {"A": "{a}", "B": "b}"}, "A", "toy")
    content = build_messages(q, "huatuo")[0]["content"]
    assert "Given {x} and {0}, what is {y}?\nA. {a}\nB. b}" in content
