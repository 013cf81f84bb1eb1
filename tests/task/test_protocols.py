"""Evaluation protocols (medr1.task.protocols, medr1.data.published): their prompts byte for byte, decoding reaching the
generator, set fingerprints, comparability labels, the offline dry run; and the decontamination fixes.

Their template is written out here from HuatuoGPT-o1's evaluation/eval.py (query_prompt + option_str +
format_map), independently of medr1.task.prompts, so a drift in either shows up as a failure.
"""

from __future__ import annotations

import json

import pytest

from medr1.cli import main
from medr1.data import Question, build_training_pool, decontaminate, load_benchmark
from medr1.data.published import huatuo_set_name, load_eval_data_file, set_fingerprint
from medr1.evaluation.evaluate import EvalSettings
from medr1.evaluation.protocol_eval import decoding, dry_run, evaluate_protocol, load_protocol_set
from medr1.generation.hf import Generation
from medr1.paths import REPO_ROOT
from medr1.report.results import results_table
from medr1.task.prompts import build_messages
from medr1.task.protocols import COMPARABLE, comparability, get_protocol

SHARED = REPO_ROOT.parent / "shared" / "benchmarks"
needs_shared = pytest.mark.skipif(not (SHARED / "medqa" / "test.jsonl").is_file(), reason="no shared benchmarks")

# HuatuoGPT-o1 evaluation/eval.py, commit dc6e08a: the two query prompts and the option layout.
THEIR_PROMPT = "Please answer the following multiple-choice question:\n{question}\n{option_str}"
THEIR_STRICT = ("Please answer the following multiple-choice questions. Please answer the following multiple-choice "
                "questions, ensuring your response concludes with the correct option in the format: 'The answer "
                "is A.'.\n{question}\n{option_str}")
THEIR_REFERENCE = ("Using the above document as a reference, please review the following question and choose the "
                   "option you find most appropriate.")


def theirs(item: dict, strict: bool = False) -> list[dict]:
    item = dict(item, option_str="\n".join(f"{op}. {ans}" for op, ans in item["options"].items()))
    return [{"role": "user", "content": (THEIR_STRICT if strict else THEIR_PROMPT).format_map(item)}]


# Items in their eval_data.json shape, with what trips a re-implementation: surrounding spaces kept,
# braces, tabs and newlines inside the text, ten options, a PubMedQA document.
EVAL_DATA = {
    "MedQA_USLME_test": [
        {"question": "A 20-year-old man {runs}.\nWhich is most likely? ", "options": {"A": "x", "B": "y {z}",
                                                                                      "C": "w", "D": "v"},
         "answer_idx": "B", "answer": "y {z}"}],
    "MedMCQA_validation": [
        {"question": "27.\tThe lateral spread of caries is facilitated mostly  by the", "options": {
            "A": "Enamel spindles", "B": "Dentinoenamel junction", "C": "Enamel lamellae", "D": "Striae"},
         "answer_idx": "B"}],
    "PubMedQA_test": [
        {"question": f"Part one. Part two.\n\n{THEIR_REFERENCE}\nDoes X work?",
         "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer_idx": "C"}],
    "MMLU-Pro_Medical_test": [
        {"question": "Which?", "options": {k: f"opt {k}" for k in "ABCDEFGHIJ"}, "answer_idx": "J"}],
}


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "eval_data.json"
    path.write_text(json.dumps(EVAL_DATA, ensure_ascii=False))
    return path


@pytest.mark.parametrize("key", list(EVAL_DATA))
@pytest.mark.parametrize(("template", "strict"), [("huatuo", False), ("huatuo_strict", True)])
def test_prompt_is_their_template_byte_for_byte(eval_file, key, template, strict):
    questions = load_eval_data_file(eval_file, key)
    for q, item in zip(questions, EVAL_DATA[key], strict=True):
        assert build_messages(q, template) == theirs(item, strict)


@needs_shared
@pytest.mark.parametrize("bench", ["medqa", "medmcqa", "pubmedqa"])
def test_protocol_prompts_on_real_sets_are_their_template(bench):
    s = load_protocol_set("huatuo-o1", bench, hub=False)
    for q in s.questions[:: max(1, len(s.questions) // 7)]:  # a handful from across the set
        assert build_messages(q, "huatuo") == theirs({"question": q.question, "options": q.options})


@needs_shared
def test_pubmedqa_in_their_layout_from_pqal():
    raw = json.loads((SHARED / "pubmedqa-pqal" / "ori_pqal.json").read_text())
    s = load_protocol_set("huatuo-o1", "pubmedqa", hub=False)
    assert s.set_size == 1000 and s.matches_published  # all of PQA-L, not the 500 test questions
    for q in s.questions[:5]:
        entry = raw[q.id]
        assert q.question == " ".join(entry["CONTEXTS"]) + "\n\n" + THEIR_REFERENCE + "\n" + entry["QUESTION"]
        assert q.options[q.answer] == entry["final_decision"]
    # Read from their file (pmid 12855939): the document ends, a blank line, the sentence, the question.
    q = {x.id: x for x in s.questions}["12855939"]
    assert q.question.startswith("longitudinal descriptive study. 2 large nursing homes in Turin, Italy. 418 ")
    assert q.question.endswith("poor mobility conditions.\n\n" + THEIR_REFERENCE + "\nIs ankle/arm pressure "
                               "predictive for cardiovascular mortality in older patients living in nursing homes?")


def test_eval_data_file_set_names_and_errors(eval_file):
    assert [huatuo_set_name(k) for k in EVAL_DATA] == ["medqa", "medmcqa", "pubmedqa", "mmlu-pro"]
    assert len(load_benchmark(str(eval_file), "medmcqa")) == 1  # load_benchmark reads their file directly
    assert load_benchmark(str(eval_file), "MedMCQA_validation")[0].source == "medmcqa"
    with pytest.raises(Exception, match="no such set 'gpqa'.*MedQA_USLME_test"):
        load_eval_data_file(eval_file, "gpqa")


def test_fingerprint_stable_and_about_questions_and_answers():
    a = Question("1", "What causes scurvy?", {"A": "Vitamin C deficiency", "B": "Iron"}, "A", "x")
    b = Question("2", "Which organ makes insulin?", {"A": "Liver", "B": "Pancreas"}, "B", "x")
    assert set_fingerprint([a, b]) == set_fingerprint([b, a]) == "9ea23a3b892bf5dbec07"  # pinned: a stored fingerprint must keep meaning
    reworded = Question("9", "what causes scurvy", {"A": "iron", "B": "vitamin C deficiency", "C": "N/A"}, "B", "y")
    assert set_fingerprint([reworded, b]) == set_fingerprint([a, b])  # ids, letters, distractors do not count
    assert set_fingerprint([a]) != set_fingerprint([a, b])  # size does
    other_answer = Question("1", "What causes scurvy?", {"A": "Vitamin C deficiency", "B": "Iron"}, "B", "x")
    assert set_fingerprint([other_answer]) != set_fingerprint([a])  # the gold answer does


def _record(set_size, published=4183, limit=None, fingerprint="f", published_fp=None, protocol="huatuo-o1",
            scorer="huatuo"):
    return {"protocol": protocol, "scorer": scorer, "benchmarks": {"medmcqa": {
        "title": "MedMCQA validation", "set_size": set_size, "published_set_size": published, "limit": limit,
        "fingerprint": fingerprint, "published_fingerprint": published_fp}}}


REF = {"protocol": "huatuo-o1", "published_sets": {"medmcqa": {"size": 4183, "fingerprint": None}}}


@pytest.mark.parametrize(("scorer", "record", "ref", "expected"), [
    ("huatuo", _record(4183), REF, COMPARABLE),  # their protocol, scorer and set
    ("huatuo", _record(2816), REF, "not comparable: MedMCQA: 2,816 of 4,183 questions"),  # our local subset
    ("huatuo", _record(4183, limit=50), REF, "not comparable: MedMCQA: --limit 50 of 4,183 questions"),
    ("huatuo", _record(4183, limit=5000), REF, COMPARABLE),  # a limit above the size keeps every question
    ("strict", _record(4183), REF, "not comparable: strict scorer; huatuo-o1 scores with huatuo"),
    ("huatuo", _record(4183, protocol="huatuo-o1-strict"), REF,
     "not comparable: protocol huatuo-o1-strict; the published numbers used huatuo-o1"),
    ("strict", None, REF, "not comparable: protocol medr1 (ours); the published numbers used huatuo-o1"),
    # Same size, other questions: caught where the published fingerprint is known.
    ("huatuo", _record(4183), {**REF, "published_sets": {"medmcqa": {"size": 4183, "fingerprint": "g"}}},
     "not comparable: MedMCQA: other questions than the published set (fingerprint f)"),
    ("huatuo", _record(4183, fingerprint="g", published_fp="g"), None, COMPARABLE),  # the record alone
])
def test_comparability_label(scorer, record, ref, expected):
    assert comparability("medmcqa", scorer, record, ref) == expected


def fake_generate(calls):
    def gen(prompts, *, on_batch, temperature, top_p, max_new_tokens, seed, num_samples, **_):
        calls.append({"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed,
                      "first": prompts[0]})
        # Empty output for the first question (a prompt too long for the context), "The answer is A." else.
        gens = [Generation(i, [""] if i == 0 else ["The answer is A."], 9, [0 if i == 0 else 4],
                           ["prompt_too_long" if i == 0 else "stop"], 0.0) for i in range(len(prompts))]
        on_batch(gens)
        return gens
    return gen


def test_sampled_protocol_runs_seeds_with_its_decoding(eval_file, tmp_path):
    calls = []
    summary = evaluate_protocol("fake", "huatuo-o1", ["medqa", "pubmedqa", "mmlu-pro"], tmp_path / "ev",
                                EvalSettings.from_params(None, seed=7), eval_file=eval_file, eval_seeds=3,
                                generate_fn=fake_generate(calls), progress=False)
    assert [(c["temperature"], c["top_p"], c["max_new_tokens"], c["seed"]) for c in calls] == [
        (0.5, 0.9, 2000, 7), (0.5, 0.9, 2000, 8), (0.5, 0.9, 2000, 9)]  # their decoding, one call per seed
    assert calls[0]["first"] == theirs(EVAL_DATA["MedQA_USLME_test"][0])
    assert all((tmp_path / "ev" / f"seed-{s}" / "predictions.jsonl").is_file() for s in (7, 8, 9))
    strict, huatuo = summary["scores"]["strict"], summary["scores"]["huatuo"]
    # The empty medqa row: wrong under strict (n = 1), out of huatuo's denominator (n_dropped = 1).
    assert (strict["medqa"]["n"], strict["medqa"]["accuracy"], huatuo["medqa"]["n_dropped"]) == (1, 0.0, 1)
    assert huatuo["pubmedqa"]["seed_accuracies"] == [0.0, 0.0, 0.0] and huatuo["pubmedqa"]["seed_std"] == 0.0
    assert summary["protocol"]["benchmarks"]["mmlu-pro"]["set_size"] == 1
    table = results_table(summary, "params/reference_results.yaml")
    row = table[(table.benchmark == "mmlu-pro") & (table.scorer == "huatuo") & (table.provenance == "measured here")]
    assert row.comparability.item() == "not comparable: MMLU-Pro: 1 of 1,535 questions"
    assert row.n_seeds.item() == 3 and table[table.benchmark == "medqa"].n_dropped.max() == 1


def test_medr1_protocol_takes_the_eval_params():
    from medr1.config import load_params

    params = load_params(None, ["eval_prompt_template=letter", "eval_max_new_tokens=64"])
    assert decoding(get_protocol("medr1"), params) == {"template": "letter", "temperature": 0.0, "top_p": 1.0,
                                                        "max_new_tokens": 64}
    assert decoding(get_protocol("huatuo-o1"), params)["template"] == "huatuo"  # a published protocol is fixed


@needs_shared
def test_cli_dry_run_offline_says_which_sets_match(tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["eval", "--protocol", "huatuo-o1", "--benchmarks", "medqa,medmcqa,pubmedqa", "--dry-run",
                 "--out", str(out), "--no-hub"]) == 0
    printed = capsys.readouterr().out
    assert "medqa: 1,273 questions" in printed and "not comparable: MedMCQA: 2,816 of 4,183 questions" in printed
    record = json.loads((out / "protocol.json").read_text())
    assert (record["temperature"], record["top_p"], record["max_new_tokens"], record["scorer"]) == (0.5, 0.9, 2000,
                                                                                                     "huatuo")
    sets = record["benchmarks"]
    assert {b: (s["set_size"], s["published_set_size"], s["set_matches_published"]) for b, s in sets.items()} == {
        "medqa": (1273, 1273, True), "medmcqa": (2816, 4183, False), "pubmedqa": (1000, 1000, True)}
    assert sets["medqa"]["fingerprint"] == "945e1b43b610d5fe1d07"  # the shared copy, pinned
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 1273 + 2816 + 1000
    assert set(prompts[0]) == {"id", "benchmark", "messages"} and prompts[0]["messages"][0]["role"] == "user"


def test_their_file_wins_and_its_size_is_checked(eval_file, tmp_path):
    record = dry_run("huatuo-o1", ["pubmedqa"], tmp_path, eval_file=eval_file, hub=False)
    assert record["benchmarks"]["pubmedqa"]["source"].startswith(f"{eval_file} [pubmedqa]")
    assert record["benchmarks"]["pubmedqa"]["why_not_comparable"] == "PubMedQA: 1 of 1,000 questions"


@needs_shared
def test_dry_run_with_limit_is_not_comparable(tmp_path):
    record = dry_run("huatuo-o1", ["pubmedqa"], tmp_path, hub=False, limit=5)
    assert record["benchmarks"]["pubmedqa"]["set_matches_published"] is True  # the set is theirs ...
    assert record["benchmarks"]["pubmedqa"]["why_not_comparable"] == "PubMedQA: --limit 5 of 1,000 questions"
    assert len((tmp_path / "prompts.jsonl").read_text().splitlines()) == 5  # ... but 5 of its questions ran


# --------------------------------------------------------------------------------------------------
# Decontamination fixes
# --------------------------------------------------------------------------------------------------


def q(id, question, options=None, answer="A", source="ev"):
    return Question(id, question, options or {"A": f"answer of {id}", "B": "something else"}, answer, source)


def test_boilerplate_threshold_counts_a_question_held_by_two_benchmarks_once():
    stem = "which of the following is the most likely cause of this patient s symptoms today"
    # Five questions, each in a 4-option and a 5-option benchmark (medqa / medqa_5options): 5 questions, not 10.
    ev = [q(f"{src}{i}", f"Case {i}: patient number {i} is unwell. {stem}",
            {"A": f"cause {i}", "B": "b", "C": "c", "D": "d", **({"E": "e"} if src == "five" else {})}, source=src)
          for src in ("four", "five") for i in range(5)]
    train = [q("t", f"A different vignette entirely. {stem}", {"A": "x", "B": "y"})]
    assert decontaminate(train, ev, max_ngram_df=10)[0] == []  # 5 < 10: the shared run is evidence
    assert decontaminate(train, ev, max_ngram_df=5)[0] == train  # 5 distinct questions: boilerplate


@pytest.mark.parametrize(("train_q", "removed"), [
    # The short question behind a number, its options reordered: no 13-word n-gram, but contained.
    (q("t1", "Q12. Axonal transport is:", {"A": "Retrograde", "B": "Antegrade and retrograde", "C": "None",
                                          "D": "Antegrade"}, "B"), True),
    # Same words, other options (another question about the same topic): kept.
    (q("t2", "Axonal transport is mediated by", {"A": "Kinesin", "B": "Actin", "C": "Keratin", "D": "Tau"}), False),
    # Gold answer present but most of the options differ: kept.
    (q("t3", "Q7. Axonal transport is", {"A": "Antegrade and retrograde", "B": "Slow", "C": "Fast", "D": "Absent"}),
     False),
])
def test_short_questions_are_caught_by_containment(train_q, removed):
    ev = [q("e1", "Axonal transport is:", {"A": "Antegrade", "B": "Retrograde", "C": "Antegrade and retrograde",
                                           "D": "None"}, "C")]
    kept, report = decontaminate([train_q], ev)
    assert (kept == []) is removed
    if removed:
        assert report.by_reason == {"containment": 1}


def test_training_pool_reports_removals_per_eval_set_and_skips_optional_sets(tmp_path):
    for name, split, rows in [("ev", "test", [("e1", "What is the capital of France?")]),
                              ("tr", "train", [("t1", "What is the capital of France?"), ("t2", "Another one?")])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{split}.jsonl").write_text("".join(json.dumps(
            {"id": i, "question": text, "options": {"A": "Paris", "B": "Rome"}, "answer_idx": "A"}) + "\n"
            for i, text in rows))
    pool, report = build_training_pool(["tr"], eval_sets=["ev", "missing:test?"], data_dir=tmp_path)
    assert [x.id for x in pool] == ["t2"] and report.removed_by_eval_set == {"ev:test": 1}
    assert report.eval_sources == ["ev:test"]  # the optional set that could not load is not claimed


# --------------------------------------------------------------------------------------------------
# Hub sets, on local rows laid out like the hub's (no network)
# --------------------------------------------------------------------------------------------------


def fake_hub(tables):
    def loader(hub_id, config, split):
        return tables[(hub_id, config, split)]
    return loader


def test_hub_sets_of_the_huatuo_protocol(tmp_path):
    medmcqa = [{"id": f"m{i}", "question": f"Q{i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": i % 4}
               for i in range(3)]
    mmlu_pro = [{"question_id": i, "question": f"P{i}?", "options": ["x", "y", "z"], "answer": "B", "answer_index": 1,
                 "category": cat} for i, cat in enumerate(["health", "biology", "law", "health"])]
    pqal = [{"pubid": str(p), "question": f"Does {p} work?", "context": {"contexts": ["One.", "Two."]},
             "final_decision": d} for p, d in [(11, "yes"), (12, "maybe")]]
    gpqa = [{"Record ID": "r1", "Question": "Which enzyme?", "Correct Answer": "Right", "Incorrect Answer 1": "w1",
             "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "High-level domain": "Biology"}]
    hub = fake_hub({("openlifescienceai/medmcqa", None, "validation"): medmcqa,
                    ("TIGER-Lab/MMLU-Pro", None, "test"): mmlu_pro,
                    ("qiaojin/PubMedQA", "pqa_labeled", "train"): pqal, ("Idavidrein/gpqa", "gpqa_main", "train"): gpqa})
    (tmp_path / "empty").mkdir()
    load = {"data_dir": tmp_path / "empty", "hub": True, "hub_loader": hub}
    s = load_protocol_set("huatuo-o1", "medmcqa", **load)
    assert "openlifescienceai/medmcqa[validation]" in s.source and [q.answer for q in s.questions] == ["A", "B", "C"]
    s = load_protocol_set("huatuo-o1", "mmlu-pro", **load)
    assert [q.id for q in s.questions] == ["0", "1", "3"]  # health and biology, not law
    s = load_protocol_set("huatuo-o1", "pubmedqa", **load)
    assert s.questions[1].question == f"One. Two.\n\n{THEIR_REFERENCE}\nDoes 12 work?" and s.questions[1].answer == "C"
    s = load_protocol_set("huatuo-o1", "gpqa", **load)
    g = s.questions[0]
    assert g.options[g.answer] == "Right" and sorted(g.options.values()) == ["Right", "w1", "w2", "w3"]
    assert s.why_not() == "GPQA: 1 of 390 questions"
    assert load_protocol_set("huatuo-o1", "gpqa", **load).questions == s.questions  # seeded option order


@needs_shared
def test_evaluate_params_runs_each_protocol_into_its_own_directory(eval_file, tmp_path):
    from medr1.config import load_params
    from medr1.evaluation.run import evaluate_params

    params = load_params(None, {"eval_protocol": ["medr1", "huatuo-o1"], "eval_models": ["base"], "eval_seeds": 2,
                                "eval_benchmarks": ["medqa"], "eval_data_file": str(eval_file), "eval_limit": 3})
    calls = []
    summaries = evaluate_params(params, tmp_path / "run", progress=False, generate_fn=fake_generate(calls))
    assert sorted(summaries) == ["base", "base@huatuo-o1"]
    assert [c["temperature"] for c in calls] == [0.0, 0.5, 0.5]  # medr1 greedy once, huatuo-o1 sampled twice
    table = results_table(tmp_path / "run", "params/reference_results.yaml")
    verdicts = dict(zip(table.label + "/" + table.scorer, table.comparability, strict=False))
    assert verdicts["base/strict"].startswith("not comparable: protocol medr1 (ours)")
    assert verdicts["base@huatuo-o1/huatuo"] == "not comparable: MedQA-USMLE: 1 of 1,273 questions"
