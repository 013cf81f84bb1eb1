"""Images of visual questions: resolve, validate and fingerprint them, and read the hub's multimodal layouts.

One job: turn the image references of a benchmark row into checked absolute paths plus content hashes,
so that everything after loading (prompts, training, evaluation, decontamination) can trust them.
Why it is built this way:

- Paths are relative to the data file that names them, and must stay inside the data directory: a
  row reading `../../etc/passwd` or an absolute path elsewhere is a `DataError`, not a file read. A
  benchmark folder can then be copied anywhere with its images.
- Every image is opened and decoded once at load time (`PIL.Image.verify` then `load`), so a missing,
  truncated or non-image file fails with the file and line of the row that names it, before any model
  loads, instead of as an exception deep inside a processor an hour into a GPU run.
- Each image's sha256 (of the file bytes) goes into `meta["image_sha256"]`: decontamination compares
  them (MedVLM-R1's training rows and its test rows come from one hub file; the same scan under two
  question wordings is the same test item), and run manifests hash content, not machine paths.
- Images are not kept in memory: a record holds paths; the processor opens them when it needs pixels.

The hub layout is FreedomIntelligence/Medical_Multimodal_Evaluation_Data (HuatuoGPT-Vision's evaluation
data, the source of MedVLM-R1's MRI training questions and CT/X-ray tests): one JSON array
`medical_multimodel_evaluation_data.json` (their spelling) of rows {question, options: [texts], answer:
text, image: ["images/x.png"], dataset, subset}, next to the `images/` folder. The MedVLM-R1 authors'
test file `MRI_CT_XRAY_300each_dataset.json` has the same rows plus `solution` (the letter).
OmniMedVQA itself is not read from its own release: its licence restricts redistribution, and the rows
MedVLM-R1 uses reach us through the file above.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medr1.data.schema import LETTERS, MAX_OPTIONS, DataError, LoadedQuestions, LoadReport, Question
from medr1.paths import file_sha256

# A Qwen2-VL image costs up to image_max_pixels / (28 * 28) prompt tokens; four fill a 1,024-token prompt
# budget at the paper's resolution. MedVLM-R1's questions have one image each.
MAX_IMAGES = 4
# The hub's `subset` labels (with their typos) -> the modality names results are split by.
MODALITY_NAMES = {
    "mr (mag-netic resonance imaging)": "MRI", "mri": "MRI", "mr": "MRI",
    "ct(computed tomography)": "CT", "ct (computed tomography)": "CT", "ct": "CT",
    "x-ray": "X-ray", "xray": "X-ray", "x ray": "X-ray",
}
MMED_FILE = "medical_multimodel_evaluation_data.json"
MEDVLM_TEST_FILE = "MRI_CT_XRAY_300each_dataset.json"


def normalize_modality(label: Any) -> str | None:
    """The modality name results are split by, from a hub `subset` or a row's `modality`.

    >>> normalize_modality("MR (Mag-netic Resonance Imaging)"), normalize_modality("X-Ray"), normalize_modality("Fundus")
    ('MRI', 'X-ray', 'Fundus')
    """
    if not isinstance(label, str) or not label.strip():
        return None
    return MODALITY_NAMES.get(label.strip().casefold(), label.strip())




def _error(problem: str, *, path, line, record_id, kind):

    return DataError(problem, path=path, line=line, record_id=record_id, kind=kind)


def check_image(path: Path, *, where: dict) -> None:
    """Open and fully decode `path`; raise a `DataError` (kind `image_unreadable` or `not_an_image`) if it
    cannot be read or is not an image PIL understands. `where` holds path/line/record_id of the row."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums; the image is unusable afterwards, so reopen to decode
        with Image.open(path) as img:
            img.load()
    except UnidentifiedImageError:
        raise _error(f"image {str(path)!r} is not an image PIL can read", kind="not_an_image", **where) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files raise these from PIL
        raise _error(f"image {str(path)!r} is unreadable ({type(e).__name__}: {e})", kind="image_unreadable",
                     **where) from None


def resolve_images(raw: Any, *, base_dir: Path, root: Path, path: str, line: int | None,
                   record_id: str | None) -> tuple[tuple[str, ...], list[str]]:
    """Checked absolute image paths and their sha256s for one row's `images` value.

    Args:
        raw: the row's value: a list of relative paths, or one path string.
        base_dir: the folder of the data file (paths are relative to it).
        root: the data directory no image may lie outside of.
        path, line, record_id: where the row is, for error messages.

    Raises:
        DataError: not a list of strings (`bad_images`), more than `MAX_IMAGES` (`too_many_images`), an
            absolute path or one leaving `root` (`image_path_escape`), a missing file (`missing_image`),
            an unreadable or non-image file (`image_unreadable`, `not_an_image`).
    """
    where = {"path": path, "line": line, "record_id": record_id}
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
        raise _error(f"images must be a list of relative file paths, got {raw!r}", kind="bad_images", **where)
    if len(items) > MAX_IMAGES:
        raise _error(f"{len(items)} images, at most {MAX_IMAGES} per question (medr1.data.images.MAX_IMAGES)",
                     kind="too_many_images", **where)
    root = root.resolve()
    paths, hashes = [], []
    for item in items:
        if Path(item).is_absolute() or item.startswith("~"):
            raise _error(f"image path {item!r} must be relative to the data file", kind="image_path_escape", **where)
        full = (base_dir / item).resolve()
        if not full.is_relative_to(root):
            raise _error(f"image path {item!r} leaves the data directory {str(root)!r}", kind="image_path_escape",
                         **where)
        if not full.is_file():
            raise _error(f"image {item!r} not found (looked for {str(full)!r})", kind="missing_image", **where)
        check_image(full, where=where)
        paths.append(str(full))
        hashes.append(file_sha256(full))
    return tuple(paths), hashes


# --------------------------------------------------------------------------------------------------
# Medical_Multimodal_Evaluation_Data (hub layout, read from a local copy)
# --------------------------------------------------------------------------------------------------


def mmed_row_to_question(row: Any, index: int, source: str, *, file: Path, root: Path, split: str | None):
    """One hub row -> `Question`: options list -> letters, the answer text -> its letter (a `solution`
    letter, when the row has one, must agree), images checked, `subset` -> `meta["modality"]`."""

    line = index + 1  # 1-based position in the JSON array, reported as the "line" of the record
    rid = str(row.get("id", f"{source}-{line}")) if isinstance(row, dict) else f"{source}-{line}"
    where = {"path": str(file), "line": line, "record_id": rid}
    if not isinstance(row, dict):
        raise _error(f"expected a JSON object, got {type(row).__name__}", kind="not_object", **where)
    missing = [k for k in ("question", "options", "answer", "image") if k not in row]
    if missing:
        raise _error(f"missing field(s) {', '.join(missing)}", kind="missing_field", **where)
    options = row["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise _error(f"options must be a list of texts, got {options!r}", kind="options_type", **where)
    options = {LETTERS[i]: o for i, o in enumerate(options[:MAX_OPTIONS])}
    matches = [k for k, v in options.items() if v == row["answer"]]
    if len(matches) != 1:
        raise _error(f"answer {row['answer']!r} matches {len(matches)} options (needs exactly one)",
                     kind="answer_not_in_options", **where)
    solution = row.get("solution")
    if isinstance(solution, str) and solution.strip() and solution.strip() != matches[0]:
        raise _error(f"solution {solution!r} disagrees with the answer text (option {matches[0]})",
                     kind="answer_mismatch", **where)
    images, hashes = resolve_images(row["image"], base_dir=file.parent, root=root, **where)
    meta = {k: row[k] for k in ("dataset", "subset") if isinstance(row.get(k), str)}
    if modality := normalize_modality(row.get("modality") or row.get("subset")):
        meta["modality"] = modality
    meta["image_sha256"] = hashes
    if split is not None:
        meta["split"] = split
    try:
        return Question(rid, row["question"], options, matches[0], source, meta, images)
    except Exception as e:  # a DataError from the record checks: put the file and line on it
        raise _error(getattr(e, "problem", str(e)), kind=getattr(e, "kind", "invalid"), **where) from None


def load_mmed(file: str | os.PathLike, source: str, *, modality: str | None = None, first: int | None = None,
              split: str | None = None, root: str | os.PathLike | None = None, on_error: str = "raise"):
    """Questions of a Medical_Multimodal_Evaluation_Data-style JSON array, optionally one modality's.

    Args:
        file: `medical_multimodel_evaluation_data.json`, or MedVLM-R1's `MRI_CT_XRAY_300each_dataset.json`.
        source: benchmark name for `Question.source`.
        modality: keep only rows of this modality ("MRI", "CT", "X-ray"), as `normalize_modality` names it.
        first: keep the first N kept rows in file order (MedVLM-R1 trains on the first MRI rows).
        root: the data directory images must stay inside (default: the file's folder).
        on_error: "raise" or "skip", as in `medr1.data.load_jsonl`.

    Returns:
        A `medr1.data.LoadedQuestions`.
    """

    file = Path(file)
    if not file.is_file():
        raise _error("file not found", path=file, line=None, record_id=None, kind="missing_file")
    try:
        rows = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(f"not a UTF-8 JSON file ({e})", path=file, line=getattr(e, "lineno", None), record_id=None,
                     kind="invalid_json") from None
    if not isinstance(rows, list):
        raise _error(f"expected a JSON array of rows, got {type(rows).__name__}", path=file, line=None,
                     record_id=None, kind="not_object")
    report = LoadReport(source=source, path=str(file))
    questions: list = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if first is not None and len(questions) >= first:
            break
        if modality is not None and (not isinstance(row, dict)
                                     or normalize_modality(row.get("modality") or row.get("subset")) != modality):
            continue
        try:
            q = mmed_row_to_question(row, index, source, file=file, root=Path(root or file.parent), split=split)
            if q.id in seen:
                raise _error(f"duplicate id {q.id!r}", path=file, line=index + 1, record_id=q.id, kind="duplicate_id")
            seen.add(q.id)
            questions.append(q)
        except DataError as e:
            if on_error == "raise":
                raise
            report.skipped.append(e)
    report.loaded = len(questions)
    return LoadedQuestions(questions, report)


def image_hashes(questions: Sequence) -> dict[str, Any]:
    """sha256 -> the first question showing that image, over `questions` (for decontamination)."""
    out: dict[str, Any] = {}
    for q in questions:
        for h in q.meta.get("image_sha256") or ():
            out.setdefault(h, q)
    return out
