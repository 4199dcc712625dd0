"""PARTONOMY's released question sets, loaded as released, and ours written in the same format.

The reference release publishes its questions as json lists of records written by its `QAPair.to_dict()`
(`partonomy_qa_pairs.json` beside `images/` for PARTONOMY-Core, `partimagenet_qa_pairs.json` ... for the others):

    image_path, image_label, question, question_type, answer_choices, answer_types ("correct" / "incorrect"),
    answer_parts (the parts of each choice), segmentations ({part name: [COCO RLE, ...]}),
    object_question, object_answer_choices, object_answer_types, object_answer_classes   (part-whole; else null)

Questions, choices and their order, the correct answer, the parts, their masks (the union of a part's RLEs) and the
object turn arrive unchanged; the released `question_type` is kept in `released_question_type` beside our five-way
type. `export_qa` writes our questions as such records (plus a few keys of ours that the reference code, which reads
the records as dicts, ignores), so a model evaluated with the reference code can be scored on our questions and
vice versa: export → import gives identical rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

from . import atomic, masks, templates
from .instances import ReadStats, SkippedRecord, image_size, text_problem
from .paths import resolve_inside
from .sources import core

logger = logging.getLogger(__name__)

CORE_QA_FILE = "partonomy_qa_pairs.json"
# released type → our five-way type. The release's `difference` ("in common with X but not with Y") is a
# difference-style question; its own name stays in `released_question_type`.
RELEASED_TO_OURS = {
    "identification": "identification",
    "identification_with_label": "identification",
    "positive": "intersection",
    "positive_with_label": "intersection",
    "negative": "difference",
    "negative_with_label": "difference",
    "difference": "difference",
    "difference_with_label": "difference",
    "whole_to_part": "whole2part",
    "part_to_whole": "part2whole",
}
# Our questions name the object (`_with_label`); part2whole calls it "the object" until its second turn.
OURS_TO_RELEASED = {
    "identification": "identification_with_label",
    "intersection": "positive_with_label",
    "difference": "negative_with_label",
    "part2whole": "part_to_whole",
    "whole2part": "whole_to_part",
}
CORRECT, INCORRECT = "correct", "incorrect"
REQUIRED = ("image_path", "question", "question_type", "answer_choices", "answer_types", "answer_parts")
OURS = ("id", "object", "object_category", "comparison_object", "bbox")  # extra keys export_qa writes
IMAGE_DIR = "images"


MALFORMED = "malformed question records"
MISSING_IMAGE = "questions whose image is missing"
UNMASKED = "correct parts without a mask (left out of `parts`)"
EMPTY_MASK = "correct parts with an empty mask (left out of `parts`)"
NO_MASK = "questions without a non-empty mask for any correct part"


class BadRecord(SkippedRecord):
    """A released record that cannot become a row; counted (as a malformed record) and skipped in a build."""

    def __init__(self, message: str):
        super().__init__(MALFORMED, message)


def _correct_index(types, what: str) -> int:
    if not isinstance(types, list) or types.count(CORRECT) != 1:
        raise BadRecord(f"{what} must hold exactly one 'correct', got {types!r}")
    return types.index(CORRECT)


def _text(value, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    problem = text_problem(value, what)
    if problem:
        raise BadRecord(problem)
    return value


def _texts(values, what: str) -> list[str]:
    if not isinstance(values, list):
        raise BadRecord(f"{what} must be a list, got {type(values).__name__}")
    return [_text(value, f"{what}[{i}]") for i, value in enumerate(values)]


def resolve_image(image_path, json_dir: Path) -> Path:
    """The record's image, inside the json's folder (`paths.resolve_inside`): its path relative to that folder, else
    by its file name under `images/` (absolute paths are often the authors' own machines). `SkippedRecord` for a path
    that leaves the folder (`..`, an absolute path elsewhere, a symlink out), `FileNotFoundError` for a missing one."""
    try:
        return resolve_inside(json_dir, image_path, (IMAGE_DIR,))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"image {image_path!r} is neither under {json_dir} nor in {json_dir / IMAGE_DIR}"
        ) from None


def _segmentation_rle(annotation, height: int, width: int, what: str) -> dict:
    """One entry of `segmentations[part]`: a COCO RLE (compressed or not), `{"segmentation": rle}`, or a polygon
    (checked by `masks.checked_polygons` before pycocotools sees it)."""
    if isinstance(annotation, dict) and "segmentation" in annotation:
        annotation = annotation["segmentation"]
    if not isinstance(annotation, dict):
        raise BadRecord(
            f"{what}: a segmentation must be an RLE or polygon dict, got {type(annotation).__name__}"
        )
    if "polygon" in annotation:
        polygons, problems = masks.checked_polygons(annotation["polygon"], height, width)
        if problems or not polygons:
            raise BadRecord(f"{what}: {problems[0] if problems else 'no polygon'}")
        return masks.from_polygons(polygons, height, width)
    if isinstance(annotation.get("counts"), list):
        return masks.from_uncompressed(annotation, what)
    return masks.validate(annotation, what)


def _part_masks(segmentations, correct_parts: list[str], height: int, width: int):
    """(parts, their masks, [(part, reason) left out]) for the correct answer's parts: each the union of its RLEs."""
    if segmentations is None:
        segmentations = {}
    if not isinstance(segmentations, dict):
        raise BadRecord(f"segmentations must map part names to masks, got a {type(segmentations).__name__}")
    parts, part_masks, left_out = [], [], []
    for part in correct_parts:
        annotations = segmentations.get(part)
        if not annotations:
            left_out.append((part, UNMASKED))
            continue
        if not isinstance(annotations, list):
            raise BadRecord(
                f"part {part!r}: its segmentations must be a list, got {type(annotations).__name__}"
            )
        rles = [_segmentation_rle(a, height, width, f"part {part!r}") for a in annotations]
        for rle in rles:
            if list(rle["size"]) != [height, width]:
                raise BadRecord(
                    f"part {part!r}: mask size {rle['size'][0]}x{rle['size'][1]} differs from the image's "
                    f"{height}x{width}"
                )
        mask = masks.union(rles)
        if masks.area(mask) == 0:
            left_out.append((part, EMPTY_MASK))
            continue
        parts.append(part)
        part_masks.append(mask)
    if not parts:
        raise SkippedRecord(NO_MASK, f"none of the correct answer's parts has a non-empty mask: {left_out}")
    return parts, part_masks, left_out


def _split_label(image_label, object_names: dict) -> tuple[str, str]:
    """(object, category) from a release's `image_label` (`category--object`, as PARTONOMY-Core's concept folders)."""
    label = (_text(image_label, "image_label", optional=True) or "").strip()
    if "--" not in label:
        return label.replace("_", " "), "object"
    category, obj = label.split("--", 1)
    return object_names.get(label.lower()) or obj.replace("_", " "), category.replace("_", " ")


def _comparison_object(question_type: str, question: str) -> str | None:
    """The other object of an intersection / difference question, read back from our templates (None otherwise)."""
    if question_type not in ("intersection", "difference"):
        return None
    pattern = {
        "intersection": r"have in common with an? (.+)\?$",
        "difference": r"have which an? (.+) does not have\?$",
    }[question_type]
    match = re.search(pattern, question)
    return match.group(1) if match else None


def _object_turn(record: dict, released_type: str, obj: str) -> tuple[str, list[str], int, str]:
    """(object question, object choices, correct object index, object) of a part-whole record."""
    object_question = _text(record.get("object_question"), "object_question", optional=True)
    object_choices = _texts(record.get("object_answer_choices") or [], "object_answer_choices")
    if not object_question or not object_choices:
        raise BadRecord(f"a {released_type} question needs object_question and object_answer_choices")
    types = record.get("object_answer_types")
    object_correct = _correct_index(types, "object_answer_types")
    if len(types) != len(object_choices):
        raise BadRecord(
            f"object_answer_types has {len(types)} entries for {len(object_choices)} object_answer_choices"
        )
    classes = record.get("object_answer_classes")
    if classes:
        classes = _texts(classes, "object_answer_classes")
        if object_correct >= len(classes):
            raise BadRecord(
                f"object_answer_classes has {len(classes)} entries; the correct object is choice {object_correct}"
            )
        obj = classes[object_correct]
    return object_question, object_choices, object_correct, obj


def _answers(record: dict) -> tuple[str, str, list[str], list[list[str]], int]:
    """(our type, released type, answer choices, their parts, correct index) of a record, checked."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise BadRecord(f"missing {missing}")
    released_type = record["question_type"]
    if released_type not in RELEASED_TO_OURS:
        raise BadRecord(
            f"unknown question_type {released_type!r}; expected one of {sorted(RELEASED_TO_OURS)}"
        )
    choices = _texts(record["answer_choices"], "answer_choices")
    parts_of_choices = record["answer_parts"]
    if not isinstance(parts_of_choices, list):
        raise BadRecord(f"answer_parts must be a list, got {type(parts_of_choices).__name__}")
    parts_of_choices = [_texts(p, f"answer_parts[{i}]") for i, p in enumerate(parts_of_choices)]
    types = record["answer_types"]
    if not (isinstance(types, list) and len(choices) == len(parts_of_choices) == len(types) and choices):
        raise BadRecord("answer_choices, answer_parts and answer_types differ in length")
    correct = _correct_index(types, "answer_types")
    return RELEASED_TO_OURS[released_type], released_type, choices, parts_of_choices, correct


def _bbox(value) -> list[float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        )
    ):
        raise BadRecord(f"bbox must be [x, y, width, height] as four finite numbers, got {value!r}")
    return [float(v) for v in value]


def record_to_row(record: dict, source: str, json_dir: Path, object_names: dict, image_sizes=None) -> dict:
    """One released record → one dataset row (see `builder.FEATURES`); `SkippedRecord` (`BadRecord` for a malformed
    record) / `FileNotFoundError` name what is wrong. `image_sizes` caches `image_size` by path across records."""
    question_type, released_type, choices, parts_of_choices, correct = _answers(record)
    image_file = resolve_image(record["image_path"], json_dir)
    image_sizes = image_sizes if image_sizes is not None else {}
    if image_file not in image_sizes:
        image_sizes[image_file] = image_size(image_file)
    width, height = image_sizes[image_file]
    parts, part_masks, left_out = _part_masks(
        record.get("segmentations"), parts_of_choices[correct], height, width
    )
    obj, category = _split_label(record.get("image_label"), object_names)
    object_question, object_choices, object_correct = None, [], -1
    if question_type in templates.PART_WHOLE_TYPES:
        object_question, object_choices, object_correct, obj = _object_turn(record, released_type, obj)
    question = _text(record["question"], "question")
    return {
        "id": _text(record.get("id"), "id", optional=True),
        "source": source,
        "image_file": str(image_file),
        "image_id": image_file.stem,
        "width": width,
        "height": height,
        "object": _text(record.get("object") or obj, "object"),
        "object_category": _text(record.get("object_category") or category, "object_category"),
        "question_type": question_type,
        "released_question_type": released_type,
        "question": question,
        "answer_choices": choices,
        "answer_parts": parts_of_choices,
        "correct_index": correct,
        "comparison_object": _text(
            record.get("comparison_object") or _comparison_object(question_type, question),
            "comparison_object",
            optional=True,
        ),
        "object_question": object_question,
        "object_answer_choices": object_choices,
        "object_correct_index": object_correct,
        "parts": parts,
        "masks": part_masks,
        "bbox": _bbox(record.get("bbox")),
        "_left_out_parts": left_out,
    }


def question_id(source: str, image_id: str, row: dict) -> str:
    """A question's id when its source gives none: `{source}-{image}-{type}` (one question per type per image)."""
    return f"{source}-{image_id}-{row['question_type']}"


def unique_ids(ids: list[str]) -> list[str]:
    """`ids` made unique, deterministically: an id keeps its value the first time it occurs, and a repeat becomes
    `{id}-{n}` with the smallest n >= 2 that no other id has or got (`q, q, q-2` → `q, q-3, q-2`)."""
    taken, seen, next_suffix, unique = set(ids), set(), {}, []
    for value in ids:
        if value in seen:
            n = next_suffix.get(value, 2)
            while f"{value}-{n}" in taken:
                n += 1
            next_suffix[value] = n + 1
            value = f"{value}-{n}"
            taken.add(value)
        seen.add(value)
        unique.append(value)
    return unique


def _read_records(path: Path) -> list:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"question file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"corrupt json in {path}: {error}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a list of question records")
    return records


def read_qa_file(path, source: str, stats: ReadStats | None = None, object_names_file=None) -> list[dict]:
    """The rows of one released question file. A bad record (missing or mistyped field, unknown type, missing image or
    one outside the json's folder or unusable, malformed or mis-sized mask) is counted in `stats` by reason, listed
    with its index and id, and skipped; a file that cannot be read at all is an error naming it. Rows without an
    `id` get `{source}-{image}-{type}`; ids are then made unique (`unique_ids`)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    records = _read_records(path)
    names_path = Path(object_names_file) if object_names_file else path.parent / core.OBJECT_NAMES_FILE
    object_names = core.read_object_names(names_path, stats)
    stats.files += 1
    rows, image_sizes = [], {}
    for index, record in enumerate(records):
        where = f"{path} record {index}"
        try:
            if not isinstance(record, dict):
                raise BadRecord(f"a record must be an object, got {type(record).__name__}")
            where += f" (id {record['id']!r})" if "id" in record else ""
            row = record_to_row(record, source, path.parent, object_names, image_sizes)
        except FileNotFoundError as error:
            stats.skip(MISSING_IMAGE, where, error)
            continue
        except SkippedRecord as error:
            stats.skip(error.reason, where, error)
            continue
        except (ValueError, KeyError, TypeError, OSError) as error:
            stats.skip(MALFORMED, where, error)
            continue
        for _, reason in row.pop("_left_out_parts"):
            stats.skipped[reason] += 1
        rows.append(row)
    ids = unique_ids([row["id"] or question_id(source, row["image_id"], row) for row in rows])
    for row, row_id in zip(rows, ids):
        row["id"] = row_id
    stats.log(f"{source} questions from {path.name}")
    return rows


def qa_files(config_name: str, source_dir: str | None, qa_json: list[str] | None) -> dict[str, Path]:
    """The released question files of a build, by split: each `--qa-json [SPLIT=]FILE`, or PARTONOMY-Core's
    `partonomy_qa_pairs.json` when the source folder has one. A file's split, unless given, comes from its name
    (`train` / `val` / `test`); PARTONOMY-Core's is `test`."""
    files = {}
    for item in qa_json or []:
        split, _, file = item.rpartition("=") if "=" in item else ("", "", item)
        name = Path(file).name.lower()
        if not split:
            if config_name == "core" or "test" in name:
                split = "test"
            elif "train" in name:
                split = "train"
            elif "val" in name:
                split = "validation"
            else:
                split = "test"
        if split in files:
            raise ValueError(f"two question files for the {split} split: {files[split]} and {file}")
        files[split] = Path(file)
    if not files and config_name == "core" and source_dir and (Path(source_dir) / CORE_QA_FILE).is_file():
        files["test"] = Path(source_dir) / CORE_QA_FILE
    return files


# ---------------------------------------------------------------------------------------------------- export


def _object_label(answer: str) -> str:
    """`It is an agricultural airplane.` → `agricultural airplane` (our object-answer template, read back)."""
    prefix = "It is "
    text = answer[len(prefix) :] if answer.startswith(prefix) else answer
    text = text.rstrip(".")
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :]
    return text


def row_to_record(row: dict, image_path: str, reference_fields_only: bool = False) -> dict:
    """One dataset row → one released-format record (`image_path` as given)."""
    correct = row["correct_index"]
    record = {
        "image_path": image_path,
        "image_label": f"{row['object_category']}--{row['object']}",
        "question": row["question"],
        "question_type": row.get("released_question_type") or OURS_TO_RELEASED[row["question_type"]],
        "answer_choices": list(row["answer_choices"]),
        "answer_types": [CORRECT if i == correct else INCORRECT for i in range(len(row["answer_choices"]))],
        "answer_parts": [list(p) for p in row["answer_parts"]],
        "segmentations": {part: [masks.normalise(rle)] for part, rle in zip(row["parts"], row["masks"])},
        "object_question": None,
        "object_answer_choices": None,
        "object_answer_types": None,
        "object_answer_classes": None,
    }
    if row["question_type"] in templates.PART_WHOLE_TYPES:
        objects, object_correct = list(row["object_answer_choices"]), row["object_correct_index"]
        record.update(
            object_question=row["object_question"],
            object_answer_choices=objects,
            object_answer_types=[CORRECT if i == object_correct else INCORRECT for i in range(len(objects))],
            object_answer_classes=[_object_label(choice) for choice in objects],
        )
    if not reference_fields_only:
        record.update({key: row[key] for key in OURS})
    return record


def _export_name(row: dict, digests: dict[str, str]) -> str:
    """The file name of a row's image under `images/`: its stored name (a bare file name; the image id's when it has
    none), unless another image with other bytes already took that name: then `{stem}-{hash}{suffix}`."""
    name = Path(row["image"]["path"] or "").name
    if not name or name.startswith("."):
        name = f"{Path(str(row['image_id'])).name or 'image'}.png"
    digest = hashlib.sha256(row["image"]["bytes"]).hexdigest()
    if digests.get(name, digest) != digest:
        path = Path(name)
        name = f"{path.stem}-{digest[:12]}{path.suffix}"
    digests[name] = digest
    return name


def export_qa(dataset, out, reference_fields_only: bool = False) -> Path:
    """Writes a dataset split (with `image` not decoded: `{"bytes", "path"}`) as a released-format question file,
    its images under `images/` beside it (each written once, its bytes unchanged; two different images of one name get
    distinct names, see `_export_name`). Atomic: a temporary file renamed when complete."""
    out = Path(out)
    image_dir = out.parent / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    records, digests, written = [], {}, set()
    for row in dataset:
        name = _export_name(row, digests)
        target = image_dir / name
        if name not in written and (not target.exists() or target.read_bytes() != row["image"]["bytes"]):
            atomic.write_bytes(target, row["image"]["bytes"])
        written.add(name)
        records.append(row_to_record(row, f"{IMAGE_DIR}/{name}", reference_fields_only))
    atomic.write_text(out, json.dumps(records))
    return out
