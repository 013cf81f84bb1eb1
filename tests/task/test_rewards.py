"""Tests for medr1.task.rewards: each reward and its hacking guards, the registry, prompts and rewards agreeing,
and property tests (never raises, stays in its range, a conflicting answer never helps).

Cases are tables with one comment each (TRL tests/test_rewards.py style). The extraction the rewards read
is tested in tests/task/test_answers.py.
"""

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import PROPERTY_SETTINGS, options_dicts, texts

from medr1.data import Question
from medr1.task.prompts import ANSWER_FORMATS, TEMPLATES, build_messages
from medr1.task.rewards import (
    REWARD_FUNCS,
    REWARD_RANGES,
    accuracy,
    answer_line,
    answer_parsable,
    completion_text,
    format_reward,
    format_shaped,
    get_reward_funcs,
    register,
    validate_reward_config,
)

DRUGS = {"A": "Aspirin", "B": "Warfarin", "C": "Beta blocker", "D": "Aspirin and clopidogrel"}


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


LINE_CASES = [
    ("Answer: B", 1.0),  # the line the letter template asks for
    ("answer: (b).", 1.0),  # case, brackets and a period
    ("Answer: D. Aspirin and clopidogrel", 1.0),  # the letter with its own option's text
    ("Warfarin prevents emboli.\nAnswer: B\n", 1.0),  # reasoning first (letter_think), trailing newline
    ("Answer: B. Aspirin", 0.0),  # the letter with another option's text: the tiny model's drift
    ("B. Warfarin", 0.0),  # parsable (answer_parsable pays it), but not the asked line
    ("Answer: A\nAnswer: B", 0.0),  # two answers
    ("Answer: B\nThe explanation is", 0.0),  # the answer line is not the last
    ("Answer: E", 0.0),  # not an option
    ("Answer:", 0.0),  # no letter
    ("", 0.0),  # empty
]


@pytest.mark.parametrize("completion, expected", LINE_CASES)
def test_answer_line(completion, expected):
    assert answer_line([completion], options_json=[OPTS]) == [expected]


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
    # A completion that follows a template's instructions scores 1 on every reward that fits its format.
    from medr1.task.prompts import FORMAT_REWARDS

    tpl = TEMPLATES[name]
    assert set(ANSWER_IN_FORMAT) == set(ANSWER_FORMATS)
    completion = ANSWER_IN_FORMAT[tpl.answer_format].format(L="B")
    fitting = [n for n in ("accuracy", "answer_parsable", "answer_line", "format") if FORMAT_REWARDS.get(n, tpl.answer_format)
               == tpl.answer_format]
    for fn in get_reward_funcs(fitting):
        assert _score(fn, [completion]) == [1.0], fn.__name__


def test_question_to_reward_columns_round_trip():
    q = Question("q", "Which drug?", DRUGS, "D", "toy")
    assert "D. Aspirin and clopidogrel" in build_messages(q, "letter")[0]["content"]
    assert accuracy(["Answer: D"], answer=[q.answer], options_json=[json.dumps(q.options)]) == [1.0]


def test_rewards_answers_prompts_and_data_do_not_import_torch():
    code = ("import sys, medr1.task.prompts, medr1.task.answers, medr1.task.rewards, medr1.data; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

# The text and option generators are the extraction tests' (tests/task/test_answers.py): one grammar, one fuzzing diet.


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
