"""Tests for benchmarks/run_cpu.py: its instruments work, on a tiny random model, in about a second.

The benchmarks themselves are not part of the test suite (`make bench` runs them, for minutes); these
tests check what their numbers rest on: forced-length generation really produces N tokens per row, the
forward profile sees one prefill per batch and one decode call per later token, the batched-vs-batch-1
comparison runs end to end, and the tables and targets are built from the results.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from helpers import ByteTokenizer

from medr1.paths import REPO_ROOT

BENCH = REPO_ROOT / "benchmarks" / "run_cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_cpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_cpu"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("run_cpu", None)


PROMPTS = ["hi", "a longer prompt", "mid", "x"]


def _frequent_token(model):
    """A token the random model emits at once for every prompt: as EOS, it would stop every row early."""
    from medr1.generation.hf import generate

    gens = generate(model, ByteTokenizer(eos=258), PROMPTS, max_new_tokens=1, batch_size=4)
    return int(gens[0].text.split()[0])


def test_timed_generate_forces_length_and_profiles(bench, tiny):
    tok = ByteTokenizer(eos=_frequent_token(tiny))
    r = bench.timed_generate(tiny, tok, PROMPTS, new_tokens=5, batch_size=2)
    assert r["new_tokens"] == 5 * len(PROMPTS)          # EOS suppressed: every row runs to the cap
    assert r["decode_steps"] == 2 * 4                   # 2 batches x (5 - 1) one-token forwards
    assert 0 < r["prefill_s"] < r["total_s"]
    assert r["decode_s"] == pytest.approx(r["total_s"] - r["prefill_s"])
    # The hook is removed afterwards: the same EOS now stops the first row at its first token.
    from medr1.generation.hf import generate

    assert generate(tiny, tok, PROMPTS[:1], max_new_tokens=5, batch_size=1)[0].finish_reason == "stop"


def test_smoke_batched_eval_and_targets(bench, tiny):
    cfg = bench.CONFIGS["smoke"]
    ev = bench.bench_batched_eval(tiny, ByteTokenizer(), PROMPTS, [None] * len(PROMPTS), cfg)
    one, many = ev["rows"]
    assert (one["prompts"], many["prompts"]) == (cfg.batch1_questions, cfg.eval_questions)
    assert ev["agreement"] == {"compared": 2, "same_answer": 2, "identical_text": 2}  # fp32: padding-invariant
    assert set(ev["ratios"]) == {"decode_tok_s", "end_to_end_tok_s", "prefill_tok_s"}
    bw = bench.bench_bandwidth(tiny, one, {"bytes_per_s": 1e10})
    weights = sum(p.numel() * 4 for p in tiny.parameters())
    assert bw["weight_bytes"] == weights and bw["bytes_per_token"] > weights  # + the KV cache
    targets = bench._targets({"batched_eval": {"fp32": ev}, "bandwidth": {"fp32": bw}, "gpu": {}})
    assert [t["met"] for t in targets][-2:] == ["n/a", "n/a"]  # GPU rows: never estimated
    assert "not measured: no GPU" in bench.format_table("t", targets, ["target", "note"])


@pytest.mark.parametrize("rows, expected", [
    ([{"a": 1.23456, "b": "x"}], ["t", "a     b", "1.23  x"]),   # floats to 3 significant digits
    ([{"a": 12, "b": None}], ["t", "a   b", "12"]),             # missing values print empty
])
def test_format_table(bench, rows, expected):
    assert bench.format_table("t", rows, ["a", "b"]).split("\n") == expected
