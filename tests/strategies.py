"""Hypothesis strategies shared by the extraction and reward property tests: one grammar of model-output
fragments and one diet of option dicts, so both fuzz the same inputs (imported as `from strategies import
...`; tests/ is on sys.path through conftest.py)."""

import string

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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
