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

import json
import logging
import os
import re
import uuid
from collections import Counter
from pathlib import Path

from PIL import Image

from . import masks, templates
from .instances import ReadStats

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


class BadRecord(ValueError):
    """A released record that cannot become a row; counted and skipped in a build."""


def _correct_index(types, what: str) -> int:
    if not isinstance(types, list) or types.count(CORRECT) != 1:
        raise BadRecord(f"{what} must hold exactly one 'correct', got {types!r}")
    return types.index(CORRECT)


def resolve_image(image_path: str, json_dir: Path) -> Path:
    """The record's image: its path relative to the json's folder, else by its file name under `images/`, else the
    path as given when it exists (absolute paths are often the authors' own machines)."""
    path = Path(image_path)
    for candidate in (json_dir / path, json_dir / IMAGE_DIR / path.name, path):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"image {image_path!r} is neither under {json_dir} nor in {json_dir / IMAGE_DIR}")


def _segmentation_rle(annotation, height: int, width: int, what: str) -> dict:
    """One entry of `segmentations[part]`: a COCO RLE (compressed or not), `{"segmentation": rle}`, or a polygon."""
    if isinstance(annotation, dict) and "segmentation" in annotation:
        annotation = annotation["segmentation"]
    if not isinstance(annotation, dict):
        raise BadRecord(
            f"{what}: a segmentation must be an RLE or polygon dict, got {type(annotation).__name__}"
        )
    if "polygon" in annotation:
        return masks.from_polygons(annotation["polygon"], height, width)
    if isinstance(annotation.get("counts"), list):
        return masks.from_uncompressed(annotation)
    return masks.validate(annotation, what)


def _split_label(image_label: str, object_names: dict) -> tuple[str, str]:
    """(object, category) from a release's `image_label` (`category--object`, as PARTONOMY-Core's concept folders)."""
    label = (image_label or "").strip()
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


def record_to_row(record: dict, source: str, json_dir: Path, object_names: dict) -> dict:
    """One released record → one dataset row (see `builder.FEATURES`); `BadRecord` / `FileNotFoundError` /
    `ValueError` name what is wrong."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise BadRecord(f"missing {missing}")
    released_type = record["question_type"]
    if released_type not in RELEASED_TO_OURS:
        raise BadRecord(
            f"unknown question_type {released_type!r}; expected one of {sorted(RELEASED_TO_OURS)}"
        )
    question_type = RELEASED_TO_OURS[released_type]
    choices, parts_of_choices = record["answer_choices"], record["answer_parts"]
    if not (len(choices) == len(parts_of_choices) == len(record["answer_types"]) and choices):
        raise BadRecord("answer_choices, answer_parts and answer_types differ in length")
    correct = _correct_index(record["answer_types"], "answer_types")
    image_file = resolve_image(record["image_path"], json_dir)
    with Image.open(image_file) as image:
        width, height = image.size
    segmentations = record.get("segmentations") or {}
    parts, part_masks, unmasked = [], [], []
    for part in parts_of_choices[correct]:
        annotations = segmentations.get(part)
        if not annotations:
            unmasked.append(part)
            continue
        rles = [_segmentation_rle(a, height, width, f"part {part!r}") for a in annotations]
        for rle in rles:
            if list(rle["size"]) != [height, width]:
                raise BadRecord(
                    f"part {part!r}: mask size {rle['size'][0]}x{rle['size'][1]} differs from the image's {height}x{width}"
                )
        parts.append(part)
        part_masks.append(masks.union(rles))
    if not parts:
        raise BadRecord("none of the correct answer's parts has a mask")
    obj, category = _split_label(record.get("image_label"), object_names)
    object_question, object_choices, object_correct = None, [], -1
    if question_type in templates.PART_WHOLE_TYPES:
        object_question = record.get("object_question")
        object_choices = record.get("object_answer_choices") or []
        if not object_question or not object_choices:
            raise BadRecord(f"a {released_type} question needs object_question and object_answer_choices")
        object_correct = _correct_index(record.get("object_answer_types"), "object_answer_types")
        classes = record.get("object_answer_classes")
        if classes:
            obj = classes[object_correct]
    return {
        "id": record.get("id"),
        "source": source,
        "image_file": str(image_file),
        "image_id": image_file.stem,
        "width": width,
        "height": height,
        "object": record.get("object") or obj,
        "object_category": record.get("object_category") or category,
        "question_type": question_type,
        "released_question_type": released_type,
        "question": record["question"],
        "answer_choices": list(choices),
        "answer_parts": [list(p) for p in parts_of_choices],
        "correct_index": correct,
        "comparison_object": record.get("comparison_object")
        or _comparison_object(question_type, record["question"]),
        "object_question": object_question,
        "object_answer_choices": list(object_choices),
        "object_correct_index": object_correct,
        "parts": parts,
        "masks": part_masks,
        "bbox": record.get("bbox"),
        "_unmasked_parts": unmasked,
    }


def read_qa_file(path, source: str, stats: ReadStats | None = None, object_names_file=None) -> list[dict]:
    """The rows of one released question file. A bad record (missing field, unknown type, missing image, malformed
    or mis-sized mask) is counted in `stats`, logged with its index and skipped; a file that cannot be read at all
    is an error naming it. Rows without an `id` get `{source}-{image}-{type}`; a repeated id gets `-2`, `-3` ..."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"question file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt json in {path}: {error}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a list of question records")
    names_path = Path(object_names_file) if object_names_file else path.parent / "object_names.json"
    object_names = {}
    if names_path.is_file():
        object_names = {k.lower(): v for k, v in json.loads(names_path.read_text(encoding="utf-8")).items()}
    stats.files += 1
    rows, seen = [], Counter()
    for index, record in enumerate(records):
        try:
            if not isinstance(record, dict):
                raise BadRecord(f"a record must be an object, got {type(record).__name__}")
            row = record_to_row(record, source, path.parent, object_names)
        except FileNotFoundError as error:
            stats.skipped["questions whose image is missing"] += 1
            logger.warning("%s record %d: %s", path, index, error)
            continue
        except (BadRecord, ValueError, KeyError, TypeError, OSError) as error:
            stats.skipped["malformed question records"] += 1
            stats.bad(f"{path} record {index}", error)
            continue
        if row.pop("_unmasked_parts"):
            stats.skipped["correct parts without a mask (left out of `parts`)"] += 1
        base = row["id"] or f"{source}-{row['image_id']}-{row['question_type']}"
        seen[base] += 1
        row["id"] = base if seen[base] == 1 else f"{base}-{seen[base]}"
        rows.append(row)
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


def export_qa(dataset, out, reference_fields_only: bool = False) -> Path:
    """Writes a dataset split (with `image` not decoded: `{"bytes", "path"}`) as a released-format question file,
    its images under `images/` beside it (each written once, its bytes unchanged). Atomic: a temporary file renamed
    when complete."""
    out = Path(out)
    image_dir = out.parent / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    records, written = [], set()
    for row in dataset:
        name = Path(row["image"]["path"] or f"{row['image_id']}.png").name
        if name not in written:
            target = image_dir / name
            if not target.exists() or target.read_bytes() != row["image"]["bytes"]:
                tmp = target.with_name(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_bytes(row["image"]["bytes"])
                os.replace(tmp, target)
            written.add(name)
        records.append(row_to_record(row, f"{IMAGE_DIR}/{name}", reference_fields_only))
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(records), encoding="utf-8")
    os.replace(tmp, out)
    return out
