"""Tests for medr1.data (schema, sources, hub, benchmarks, pool): record validation, every loader error,
lenient loading, benchmark lookup, hub converters (on local files laid out like the hub rows),
decontamination and the training pool.

Everything runs on tiny fixtures under tests/fixtures/data/ or files written to tmp_path; the real
benchmark counts are checked under the `benchmarks` marker and skip when ../shared/benchmarks is absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medr1 import data
from medr1.data import (
    KNOWN_BENCHMARKS,
    DataError,
    Question,
    build_training_pool,
    data_card,
    decontaminate,
    load_benchmark,
    load_from_hub,
    load_jsonl,
    load_pubmedqa_pqal,
    normalize_text,
    questions_hash,
    resolve_data_dir,
    sources,
    without_placeholder_options,
)
from medr1.paths import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "data"
TOY_DIR = FIXTURES / "toy_dir"
HUB_FILES = {
    "GBaker/MedQA-USMLE-4-options": FIXTURES / "hub" / "medqa.jsonl",
    "openlifescienceai/medmcqa": FIXTURES / "hub" / "medmcqa.jsonl",
    "qiaojin/PubMedQA": FIXTURES / "hub" / "pubmedqa.jsonl",
    "cais/mmlu": FIXTURES / "hub" / "mmlu.jsonl",
    "TIGER-Lab/MMLU-Pro": FIXTURES / "hub" / "mmlu_pro.jsonl",
}
GOOD = {"question": "Which organ produces insulin?", "options": {"A": "Liver", "B": "Pancreas"}, "answer_idx": "B"}


def q(id="1", question="2+2?", options=None, answer="B", source="toy", **meta):
    return Question(id, question, options or {"A": "3", "B": "4"}, answer, source, meta)


def write_lines(path: Path, lines: list[str | bytes | dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join(
        (line if isinstance(line, bytes) else (json.dumps(line) if isinstance(line, dict) else line).encode())
        + b"\n"
        for line in lines
    )
    path.write_bytes(raw)
    return path


@pytest.fixture
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# --------------------------------------------------------------------------------------------------
# Question
# --------------------------------------------------------------------------------------------------


def test_question_round_trip_and_letters():
    x = q(subject="anatomy")
    assert Question.from_dict(x.to_dict()) == x
    assert x.letters == ("A", "B")
    assert json.loads(json.dumps(x.to_dict()))["meta"] == {"subject": "anatomy"}


def test_question_copies_its_dicts():
    options = {"A": "3", "B": "4"}
    x = Question("1", "2+2?", options, "B", "toy")
    options["C"] = "5"  # must not reach the validated record
    assert x.letters == ("A", "B")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"question": "  "}, "question text is empty"),  # blank question
        ({"options": {"A": "x"}, "answer": "A"}, "needs 2 to 26 options, got 1"),  # too few
        ({"options": {"A": "x", "C": "y"}, "answer": "A"}, "consecutive from A"),  # gap in letters
        ({"options": {"B": "x", "A": "y"}, "answer": "A"}, "consecutive from A"),  # out of order
        ({"answer": "C"}, "answer 'C' is not among the options A-B"),  # not an option
        ({"answer": "4"}, "matches option B"),  # answer text instead of its letter
        ({"options": {"A": "x", "B": ""}, "answer": "A"}, "option B must be non-empty"),  # empty option
        ({"id": ""}, "id must be a non-empty string"),  # empty id
    ],
)
def test_question_validation(kwargs, expected):
    args = {"id": "q7", "question": "2+2?", "options": {"A": "3", "B": "4"}, "answer": "B", "source": "toy"}
    with pytest.raises(DataError, match=expected) as e:
        Question(**{**args, **kwargs})
    assert "toy" in str(e.value)  # names where the record came from


def test_question_accepts_26_options_and_rejects_27():
    many = {chr(65 + i): f"option {i}" for i in range(26)}
    assert len(Question("1", "?", many, "Z", "toy").options) == 26
    with pytest.raises(DataError, match="got 27"):
        Question.from_dict({"id": "1", "question": "?", "options": {**many, "[": "x"}, "answer": "A", "source": "t"})


def test_from_dict_names_missing_and_unknown_fields():
    with pytest.raises(DataError, match="missing field.*answer"):
        Question.from_dict({"id": "1", "question": "?", "options": {"A": "x", "B": "y"}, "source": "t"})
    with pytest.raises(DataError, match="unknown field.*extra"):
        Question.from_dict({**q().to_dict(), "extra": 1})


# --------------------------------------------------------------------------------------------------
# load_jsonl
# --------------------------------------------------------------------------------------------------


def test_load_jsonl_ids_meta_and_blank_lines(tmp_path):
    path = write_lines(tmp_path / "b.jsonl", [
        {**GOOD, "realidx": 7, "subject": "anatomy", "meta_info": "step1", "answer": "Pancreas"},  # realidx
        "",  # blank lines are ignored
        {**GOOD, "id": "x9", "category": "health", "src": "ori"},  # id field
        GOOD,  # no id: source-line
    ])
    qs = load_jsonl(path, "toy", split="test")
    assert [x.id for x in qs] == ["7", "x9", "toy-4"]
    assert qs[0].meta == {"subject": "anatomy", "meta_info": "step1", "split": "test"}
    assert qs[1].meta == {"category": "health", "src": "ori", "split": "test"}
    assert qs.report.loaded == 3 and qs.report.skipped == []


BAD_LINES = [
    # (line 2 content, expected substrings of the message besides the file name and "line 2")
    (b'{"question": "x", "options": {"A": "\xff\xfe"}}', ["invalid UTF-8"]),  # undecodable bytes
    ('{"question": "x", "options": ', ["invalid JSON"]),  # truncated line
    ('["question", "options"]', ["expected a JSON object", "list"]),  # wrong shape
    ({"question": "x", "options": {"A": "a", "B": "b"}}, ["missing field", "answer_idx"]),  # no answer
    ({**GOOD, "options": ["Liver", "Pancreas"]}, ["options must be a {letter: text} object, got a list"]),
    ({**GOOD, "answer_idx": "Pancreas"}, ["answer text 'Pancreas'", "matches option B"]),  # text, not letter
    ({**GOOD, "answer_idx": "somewhere else"}, ["must be an option letter", "'somewhere else'"]),  # no match
    ({**GOOD, "answer_idx": "C"}, ["answer 'C' is not among the options A-B"]),
    ({**GOOD, "answer_idx": 1}, ["must be an option letter", "int"]),  # index instead of letter
    ({**GOOD, "question": ""}, ["question text is empty"]),
    ({**GOOD, "options": {"A": "Liver"}, "answer_idx": "A"}, ["2 to 26 options, got 1"]),
    ({**GOOD, "options": {chr(65 + i): str(i) for i in range(27)}}, ["2 to 26 options, got 27"]),
    ({**GOOD, "options": {"A": "Liver", "C": "Pancreas"}, "answer_idx": "A"}, ["consecutive from A", "A, C"]),
    ({**GOOD, "realidx": 5}, ["duplicate id '5'", "first on line 1, again on line 2"]),  # see line 1 below
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LINES)
def test_load_jsonl_errors_name_file_line_and_problem(tmp_path, bad, expected):
    path = write_lines(tmp_path / "bench.jsonl", [{**GOOD, "realidx": 5}, bad, {**GOOD, "realidx": 6}])
    with pytest.raises(DataError) as e:
        load_jsonl(path, "toy")
    message = str(e.value)
    assert "bench.jsonl" in message and "line 2" in message
    for part in expected:
        assert part in message, message


def test_load_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load_jsonl(tmp_path / "nope.jsonl", "toy")


def test_load_jsonl_skip_reports_count_and_reasons(tmp_path, caplog):
    path = write_lines(tmp_path / "bench.jsonl", [
        {**GOOD, "realidx": 1},
        "{not json",  # invalid_json
        {**GOOD, "realidx": 2, "answer_idx": "Liver"},  # answer_text
        {**GOOD, "realidx": 3, "answer_idx": "Pancreas"},  # answer_text
        {**GOOD, "realidx": 1},  # duplicate_id
        {**GOOD, "realidx": 4},
    ])
    with caplog.at_level(logging.WARNING, logger="medr1.data"):
        qs = load_jsonl(path, "toy", on_error="skip")
    assert [x.id for x in qs] == ["1", "4"]
    report = qs.report
    assert report.loaded == 2 and len(report.skipped) == 4
    assert report.reasons == {"answer_text": 2, "invalid_json": 1, "duplicate_id": 1}
    assert [e.line for e in report.skipped] == [2, 3, 4, 5]
    assert "skipped 4" in caplog.text and "answer_text: 2" in caplog.text  # never silent


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        load_jsonl(write_lines(tmp_path / "a.jsonl", [GOOD]), "toy", on_error="ignore")


# --------------------------------------------------------------------------------------------------
# Data dir resolution and load_benchmark
# --------------------------------------------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    env_dir.mkdir(), arg_dir.mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    assert resolve_data_dir(arg_dir) == arg_dir  # argument first
    assert resolve_data_dir() == env_dir  # then the environment
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", tmp_path / "absent")
    assert resolve_data_dir() is None  # nothing: the hub
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", arg_dir)
    assert resolve_data_dir() == arg_dir  # the shared folder beside the repo


def test_resolve_data_dir_default_is_beside_repo():
    assert sources.DEFAULT_DATA_DIR.relative_to(sources.REPO_ROOT.parent) == Path("shared", "benchmarks")


def test_explicit_missing_data_dir_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="data dir does not exist"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(DataError, match="MEDR1_DATA_DIR"):
        resolve_data_dir()


def test_env_var_data_dir_is_used_by_load_benchmark(monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(TOY_DIR))
    qs = load_benchmark("toyeval")
    assert [x.id for x in qs] == ["e1", "e2", "e3"]
    assert all(x.source == "toyeval" and x.meta["split"] == "test" for x in qs)


def test_ten_option_benchmark_in_any_folder(tmp_path):
    options = {chr(65 + i): f"choice {i}" for i in range(10)}
    write_lines(tmp_path / "tenopt" / "test.jsonl", [
        {"id": f"t{i}", "question": f"Question {i}?", "options": options, "answer_idx": "J"} for i in range(3)
    ])
    qs = load_benchmark("tenopt", data_dir=tmp_path, limit=2)
    assert len(qs) == 2 and qs[0].letters[-1] == "J" and qs[0].answer == "J"
    assert qs.report.loaded == 3  # the report describes the file, the limit only trims


def test_unknown_benchmark_lists_known_names_and_dir(tmp_path):
    with pytest.raises(DataError) as e:
        load_benchmark("medqa-typo", data_dir=tmp_path)
    message = str(e.value)
    assert "unknown benchmark 'medqa-typo'" in message
    assert all(name in message for name in KNOWN_BENCHMARKS)
    assert str(tmp_path / "medqa-typo") in message


def test_unknown_benchmark_without_data_dir(monkeypatch, no_env_data_dir, tmp_path):
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="no data dir"):
        load_benchmark("whatever")


def test_missing_split_lists_available(tmp_path):
    write_lines(tmp_path / "b" / "train.jsonl", [GOOD])
    with pytest.raises(DataError, match="no split 'test'; available: train"):
        load_benchmark("b", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="plain name"):
        load_benchmark("b", "../b/train", data_dir=tmp_path)


def test_load_benchmark_skip_mode_exposes_report(tmp_path):
    write_lines(tmp_path / "b" / "test.jsonl", [GOOD, "{", GOOD | {"answer_idx": "Q"}])
    qs = load_benchmark("b", data_dir=tmp_path, on_error="skip")
    assert len(qs) == 1
    assert qs.report.reasons == {"invalid_json": 1, "answer_not_in_options": 1}
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_benchmark("b", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# PubMedQA PQA-L
# --------------------------------------------------------------------------------------------------


def test_pqal_splits_context_and_options():
    test = load_benchmark("pubmedqa-pqal", "test", data_dir=TOY_DIR)
    train = load_benchmark("pubmedqa-pqal", "train", data_dir=TOY_DIR)
    assert [x.id for x in test] == ["222", "444"]  # the ground-truth ids, in ori_pqal order
    assert [x.id for x in train] == ["111", "333"]  # the rest
    first = train[0]
    assert first.question == "Does drug X lower blood pressure?"
    assert first.meta["context"] == "Background text one.\nResults text one."
    assert first.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert [x.answer for x in test + train] == ["C", "A", "A", "B"]  # maybe, yes, yes, no


def test_pqal_disagreeing_ground_truth(tmp_path):
    folder = tmp_path / "pubmedqa-pqal"
    folder.mkdir()
    (folder / "ori_pqal.json").write_text((TOY_DIR / "pubmedqa-pqal" / "ori_pqal.json").read_text())
    (folder / "test_ground_truth.json").write_text(json.dumps({"222": "yes", "444": "yes"}))
    with pytest.raises(DataError, match="test_ground_truth.json.*'222'.*disagrees"):
        load_pubmedqa_pqal(folder, "test")
    assert [x.id for x in load_pubmedqa_pqal(folder, "test", on_error="skip")] == ["444"]


# --------------------------------------------------------------------------------------------------
# Hub converters, exercised through datasets' JSON builder on files laid out like the hub rows
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    cache = tmp_path_factory.mktemp("hf_cache")
    calls = []

    def loader(hub_id, config, split):
        calls.append((hub_id, config, split))
        return datasets.load_dataset("json", data_files=str(HUB_FILES[hub_id]), split="train", cache_dir=str(cache))

    loader.calls = calls
    return loader


def test_hub_medqa(local_hub):
    qs = load_from_hub("medqa", "test", hub_loader=local_hub)
    assert local_hub.calls[-1] == ("GBaker/MedQA-USMLE-4-options", None, "test")
    assert [(x.id, x.answer, len(x.options)) for x in qs] == [("medqa-0", "A", 4), ("medqa-1", "B", 4)]
    assert qs[1].meta == {"meta_info": "step2&3", "split": "test"}


def test_hub_medmcqa_maps_cop_and_uses_validation_as_test(local_hub):
    qs = load_from_hub("medmcqa", "test", hub_loader=local_hub, on_error="skip")
    assert local_hub.calls[-1][2] == "validation"
    assert [(x.id, x.answer) for x in qs] == [("mm-1", "B"), ("mm-2", "D")]  # cop 1 -> B, 3 -> D
    assert qs[0].options["B"] == "Ethosuximide" and qs[0].meta["subject"] == "Pharmacology"
    assert "topic" not in qs[1].meta  # None fields are dropped
    assert qs.report.reasons == {"answer_not_in_options": 1}  # the unlabeled row (cop = -1)
    with pytest.raises(DataError, match=r"openlifescienceai/medmcqa\[validation\].*row 2.*cop"):
        load_from_hub("medmcqa", "test", hub_loader=local_hub)


def test_hub_pubmedqa_reproduces_official_split(local_hub):
    test = load_from_hub("pubmedqa-pqal", "test", hub_loader=local_hub)
    train = load_from_hub("pubmedqa-pqal", "train", hub_loader=local_hub)
    assert {x.id for x in test} | {x.id for x in train} == {"111", "222", "333", "444"}
    assert not {x.id for x in test} & {x.id for x in train}
    rows = [("111", "yes"), ("222", "maybe"), ("333", "no"), ("444", "yes")]
    assert {x.id for x in test} == data.pubmedqa_official_test_ids(rows)
    by_id = {x.id: x for x in test + train}
    assert by_id["111"].meta["context"] == "Background text one.\nResults text one."
    assert (by_id["222"].answer, by_id["333"].answer) == ("C", "B")


def test_hub_mmlu_keeps_medical_subjects(local_hub):
    qs = load_from_hub("mmlu", "test", hub_loader=local_hub)
    assert [(x.meta["subject"], x.answer) for x in qs] == [("anatomy", "A"), ("medical_genetics", "B")]


def test_hub_mmlu_pro_keeps_health(local_hub):
    qs = load_from_hub("mmlu-pro", "test", hub_loader=local_hub)
    assert [(x.id, len(x.options), x.answer) for x in qs] == [("6001", 7, "E"), ("6002", 4, "B")]
    assert qs[0].options["E"] == "Sewage control and hygiene"


def test_hub_is_used_when_no_data_dir(local_hub, monkeypatch, no_env_data_dir, tmp_path):
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", tmp_path / "absent")
    assert len(load_benchmark("mmlu-pro", hub_loader=local_hub)) == 2


def test_hub_failure_and_local_only_benchmarks_explain_themselves():
    def offline(hub_id, config, split):
        raise ConnectionError("no network")

    with pytest.raises(DataError, match="could not load medqa from the hub.*no network.*MEDR1_DATA_DIR"):
        load_from_hub("medqa", hub_loader=offline)
    with pytest.raises(DataError, match="afrimedqa has no hub source"):
        load_from_hub("afrimedqa", "train")


def test_converters_directly():
    row = {"question_id": 1, "question": "?", "options": ["a", "b"], "answer": "B", "answer_index": 0}
    with pytest.raises(DataError, match="disagrees with answer_index"):
        data.convert_mmlu_pro_row(row, 0, "mmlu-pro")
    mmlu = data.convert_mmlu_row({"question": "?", "choices": ["a", "b", "c"], "answer": 2}, 5, "mmlu")
    assert (mmlu.id, mmlu.answer) == ("mmlu-5", "C")


# --------------------------------------------------------------------------------------------------
# Decontamination and the training pool
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  Which  of the FOLLOWING?! ", "which of the following"),  # case, punctuation, spaces
        ("ﬁbrosis\tof the\nlung", "fibrosis of the lung"),  # NFKC ligature, tabs and newlines
        ("mg/dL", "mg dl"),  # punctuation splits words rather than fusing them
        ("under_score", "under score"),  # \w keeps "_", so it is removed separately
    ],
)
def test_normalize_text(raw, normalized):
    assert normalize_text(raw) == normalized


def test_decontaminate_exact_normalized_ngram():
    ev = load_benchmark("toyeval", data_dir=TOY_DIR)
    train = load_benchmark("toytrain", "train", data_dir=TOY_DIR)
    kept, report = decontaminate(train, ev)
    assert [x.id for x in kept] == ["t4", "t5", "t6", "t7"]
    assert [(m.train_id, m.eval_id, m.reason) for m in report.removed] == [
        ("t1", "e2", "exact"),  # verbatim question text
        ("t2", "e1", "normalized"),  # case and whitespace changed
        ("t3", "e3", "ngram"),  # shares a 13-word run
    ]
    assert report.by_reason == {"exact": 1, "normalized": 1, "ngram": 1}
    assert report.by_eval_source == {"toyeval": 3}
    assert (report.n_train, report.n_kept, report.n_eval) == (7, 4, 3)
    assert json.loads(json.dumps(report.to_dict()))["removed"][0]["eval_id"] == "e2"


def test_decontaminate_ngram_size_matters():
    ev = load_benchmark("toyeval", data_dir=TOY_DIR)
    t3 = [x for x in load_benchmark("toytrain", "train", data_dir=TOY_DIR) if x.id == "t3"]
    assert decontaminate(t3, ev, ngram_size=13)[0] == []
    assert decontaminate(t3, ev, ngram_size=30)[0] == t3  # the shared run is shorter than 30 words


def test_decontaminate_matches_context_of_pqal_questions():
    ev = [Question("p1", "Does X work?", {"A": "yes", "B": "no", "C": "maybe"}, "A", "pubmedqa-pqal",
                   {"context": "We randomised two hundred adults with chronic asthma to inhaled drug X or placebo"})]
    copy = q("t", "We randomised two hundred adults with chronic asthma to inhaled drug X or placebo for a year.\n"
             "Is X effective?", {"A": "yes", "B": "no"}, "A")
    assert decontaminate([copy], ev)[1].by_reason == {"ngram": 1}


def test_decontaminate_ignores_boilerplate_shared_by_many_eval_questions():
    stem = "which of the following is the most likely cause of this patient s symptoms today"
    ev = [q(f"e{i}", f"Case {i}: patient number {i} is unwell. {stem}") for i in range(10)]
    train = [q("t", f"A different vignette entirely. {stem}", {"A": "x", "B": "y"})]
    assert decontaminate(train, ev)[0] == train  # boilerplate in 10 eval questions is no evidence
    assert decontaminate(train, ev, max_ngram_df=None)[0] == []  # unless asked to use every n-gram
    assert decontaminate(train, ev[:9])[0] == []  # below the threshold it counts


def test_training_pool_never_contains_test_questions():
    pool, report = build_training_pool(["toytrain"], eval_sets=["toyeval"], data_dir=TOY_DIR)
    assert sorted(x.id for x in pool) == ["t4", "t5", "t6"]  # t7 duplicates t4
    assert report.n_duplicates == 1 and report.by_reason == {"exact": 1, "normalized": 1, "ngram": 1}
    assert report.eval_sources == ["toyeval:test"]
    test_texts = {normalize_text(x.question) for x in load_benchmark("toyeval", data_dir=TOY_DIR)}
    assert not test_texts & {normalize_text(x.question) for x in pool}


def test_training_pool_is_deterministic_and_limit_is_a_prefix():
    def ids(seed, limit=None):
        pool, _ = build_training_pool(["toytrain"], eval_sets=["toyeval"], data_dir=TOY_DIR, seed=seed,
                                      limit=limit)
        return [x.id for x in pool]

    assert ids(0) == ids(0)
    assert {tuple(ids(s)) for s in range(6)} != {tuple(ids(0))}  # the seed does change the order
    assert ids(3, limit=2) == ids(3)[:2]


def test_training_pool_eval_split_syntax():
    # "toytrain:train" evaluates on toytrain's train split, so the whole pool is held out.
    pool, report = build_training_pool(["toytrain"], eval_sets=["toytrain:train"], data_dir=TOY_DIR)
    assert pool == [] and report.eval_sources == ["toytrain:train"]


def test_placeholder_options_are_removed_and_gold_follows_its_text():
    # AfriMed-QA pads true/false statements to five options with "N/A".
    padded = q(options={"A": "True", "B": "False", "C": "N/A", "D": "N/A", "E": "N/A"}, answer="B")
    assert without_placeholder_options(padded).options == {"A": "True", "B": "False"}
    assert without_placeholder_options(padded).answer == "B"
    middle = q(options={"A": " n/a ", "B": "Aspirin", "C": "N/A", "D": "Heparin"}, answer="D")
    cleaned = without_placeholder_options(middle)
    assert cleaned.options == {"A": "Aspirin", "B": "Heparin"} and cleaned.answer == "B"
    assert cleaned.options[cleaned.answer] == middle.options[middle.answer]
    assert cleaned.meta["placeholder_options_removed"] == 2
    plain = q(options={"A": "Na", "B": "K", "C": "None"}, answer="A")  # sodium and "None" are real options
    assert without_placeholder_options(plain) is plain
    assert without_placeholder_options(q(options={"A": "True", "B": "N/A"}, answer="A")) is None  # one left
    by_letter = q(options={"A": "x", "B": "N/A", "C": "y", "D": "Both A and C"}, answer="D")
    assert without_placeholder_options(by_letter) is by_letter  # re-lettering would break "A and C"
    trailing = q(options={"A": "x", "B": "y", "C": "Both A and B", "D": "N/A"}, answer="C")
    assert without_placeholder_options(trailing).options == {"A": "x", "B": "y", "C": "Both A and B"}
    assert without_placeholder_options(q(options={"A": "x", "B": "y", "C": "N/A"}, answer="C")) is None


def test_training_pool_removes_placeholder_options_but_eval_sets_stay_as_published(tmp_path):
    def write(name, split, rows):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    padded = {"options": {"A": "True", "B": "False", "C": "N/A", "D": "N/A"}, "answer_idx": "A"}
    write("padtrain", "train", [{"question": "The liver makes bile.", **padded},
                                {"question": "The heart has four chambers?", "options": {"A": "N/A", "B": "Yes"},
                                 "answer_idx": "B"},
                                {**GOOD, "question": "Which organ secretes glucagon?"}])
    write("padeval", "test", [{"question": "Insulin lowers glucose.", **padded}])
    pool, report = build_training_pool(["padtrain"], eval_sets=["padeval"], data_dir=tmp_path)
    by_text = {x.question: x for x in pool}
    assert by_text["The liver makes bile."].options == {"A": "True", "B": "False"}
    assert "The heart has four chambers?" not in by_text  # one real option left: not a question
    assert by_text["Which organ secretes glucagon?"].options == GOOD["options"]
    assert report.n_placeholder_options == 2 and report.to_dict()["n_placeholder_options"] == 2
    assert load_benchmark("padeval", data_dir=tmp_path)[0].options == padded["options"]


# --------------------------------------------------------------------------------------------------
# Hash and data card
# --------------------------------------------------------------------------------------------------


def test_questions_hash_is_stable_and_sensitive():
    qs = [q("1"), q("2", subject="x")]
    h = questions_hash(qs)
    assert h == questions_hash([Question.from_dict(x.to_dict()) for x in qs])  # content, not identity
    assert len(h) == 64
    assert questions_hash(qs[::-1]) != h  # order is part of the training input
    assert questions_hash([q("1"), q("2", subject="y")]) != h  # so is meta
    # Pinned: a change to the canonical form would silently change every manifest's data hash.
    assert questions_hash([q("1")]) == "c1695ffa000935db22079216f759df0f59de9326036a3c57a09376c4c3295173"
    assert questions_hash([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_data_card():
    qs = [q("1"), q("2", answer="A"), q("3", options={"A": "x", "B": "y", "C": "z"}, answer="C", source="other")]
    card = data_card(qs, split="train")
    assert card["counts"].to_dict("records") == [
        {"source": "other", "split": "train", "questions": 1},
        {"source": "toy", "split": "train", "questions": 2},
    ]
    assert card["options"].loc["toy", 2] == 2 and card["options"].loc["other", 3] == 1
    assert card["answers"].loc["toy", "A"] == pytest.approx(0.5)
    assert card["length"].loc["toy", "count"] == 2 and card["length"].loc["toy", "max"] == 1


# --------------------------------------------------------------------------------------------------
# Real benchmarks (../shared/benchmarks)
# --------------------------------------------------------------------------------------------------

REAL_COUNTS = [
    ("medqa", "test", 1273),
    ("medqa_5options", "test", 1273),
    ("medmcqa", "test", 2816),
    ("pubmedqa", "test", 500),
    ("pubmedqa", "train", 450),
    ("mmlu", "test", 1089),
    ("mmlu-pro", "test", 818),
    ("afrimedqa", "train", 124),
    ("pubmedqa-pqal", "test", 500),
    ("pubmedqa-pqal", "train", 500),
]

needs_benchmarks = pytest.mark.skipif(not data.DEFAULT_DATA_DIR.is_dir(), reason="../shared/benchmarks absent")


@pytest.mark.benchmarks
@needs_benchmarks
@pytest.mark.parametrize(("name", "split", "count"), REAL_COUNTS)
def test_real_benchmark_counts(name, split, count):
    qs = load_benchmark(name, split, data_dir=data.DEFAULT_DATA_DIR, on_error="skip")
    assert qs.report.skipped == []  # every real record is clean
    assert len(qs) == count
    assert len({x.id for x in qs}) == count


@pytest.mark.benchmarks
@needs_benchmarks
def test_real_pqal_split_matches_official_script():
    folder = data.DEFAULT_DATA_DIR / "pubmedqa-pqal"
    ori = json.loads((folder / "ori_pqal.json").read_text())
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    assert data.pubmedqa_official_test_ids([(k, v["final_decision"]) for k, v in ori.items()]) == set(truth)


@pytest.mark.benchmarks
@needs_benchmarks
def test_real_pubmedqa_train_is_held_out_from_test():
    pool, report = build_training_pool(["pubmedqa", "pubmedqa-pqal"], eval_sets=["pubmedqa", "pubmedqa-pqal"],
                                       data_dir=data.DEFAULT_DATA_DIR)
    assert report.n_duplicates == 450  # the JSONL train items are the PQA-L train items in another layout
    assert len(pool) == 500 and report.removed == []
