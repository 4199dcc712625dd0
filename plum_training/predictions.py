"""Predictions files: the one reader of the JSONL that `eval_partonomy.py` writes as it evaluates a model and reads
back to resume or to re-score (`--from-predictions`, also for files written by another model's own code).

Format (README, "Evaluate your model"): one JSON object per line; an optional first line `{"header": {...}}` (the
model and its weights' fingerprint, in the dumps `eval_partonomy.py` writes); then one line per question:

    {"id": "core-agri_1-identification", "chosen": 1, "masks": {"wing": {"size": [480, 640], "counts": "..."}}}
    {"id": "core-knife_1-part2whole", "chosen": 3, "object_chosen": 0}
    {"id": ..., "chosen": 2, "masks": [RLE, ...], "mask_parts": ["wing", ...], "scores": [...], ...}   (our dumps)

Every line is checked against the dataset rows before anything reaches the metrics; what cannot be scored is left out
and reported with its question id (or line number) and reason, never silently and never by aborting the whole file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from metrics.giou.giou import check_rles, to_rle
from partonomy_dataset import atomic
from partonomy_dataset.templates import PART_WHOLE_TYPES

logger = logging.getLogger(__name__)


class DuplicateId(ValueError):
    """A predictions file with two records for one question: which one to score cannot be guessed."""


def _index_problem(value, name: str, num_choices: int | None) -> str | None:
    """Why `value` is not a usable pick among `num_choices` choices (None: no range to check), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"`{name}` must be an integer index, got {value!r}"
    if num_choices is not None and not 0 <= value < num_choices:
        return f"`{name}` {value} is not one of the {num_choices} choices"
    return None


def validate_record(record, row: Mapping | None = None) -> str | None:
    """Why a prediction record cannot be scored, or None when it can. `row` is the dataset row of its question
    (None: only the record's own shape is checked, as when a run resumes from its own dump).

    A record needs a string `id`; `chosen`, when present and not null, must be a non-bool int indexing the row's
    `answer_choices`; `object_chosen` likewise for `object_answer_choices`, range-checked on part2whole / whole2part
    rows only (other rows ignore it; -1 is what they carry). Masks are checked separately (`mask_problem`): a bad mask
    costs the record its masks, not its picks.
    """
    if not isinstance(record, dict):
        return f"a prediction must be a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("id"), str):
        return f"`id` must be a string, got {type(record.get('id')).__name__}"
    num_choices = None if row is None else len(row["answer_choices"])
    problem = _index_problem(record.get("chosen"), "chosen", num_choices)
    if problem is None and (row is None or row["question_type"] in PART_WHOLE_TYPES):
        num_objects = None if row is None else len(row["object_answer_choices"])
        problem = _index_problem(record.get("object_chosen"), "object_chosen", num_objects)
    elif problem is None:
        problem = _index_problem(record.get("object_chosen"), "object_chosen", None)
    return problem


def _named_masks(record: dict) -> tuple[list, list] | str:
    """(part names, masks) of a record, or the reason they cannot be read: `masks` as `{part: RLE}` (the documented
    format) or as a list beside `mask_parts` (what eval_partonomy.py writes)."""
    masks = record["masks"]
    if isinstance(masks, dict):
        names, masks = list(masks), list(masks.values())
    elif isinstance(masks, list):
        names = record.get("mask_parts")
        if not isinstance(names, list) or len(names) != len(masks):
            return f"`masks` is a list of {len(masks)} but `mask_parts` is not a list of as many part names"
    else:
        return f"`masks` must be {{part name: RLE}} or a list beside `mask_parts`, got {type(masks).__name__}"
    if not all(isinstance(name, str) for name in names):
        return "every part name of `masks` must be a string"
    return names, masks


def mask_problem(record: dict, row: Mapping) -> str | None:
    """Why a record's masks cannot be scored against its dataset row, or None (also when it has none): each must be a
    COCO RLE that decodes (`metrics.giou.check_rles`) to exactly the row's image size, with integer sizes."""
    if record.get("masks") is None:
        return None
    named = _named_masks(record)
    if isinstance(named, str):
        return named
    names, masks = named
    height, width = int(row["height"]), int(row["width"])
    question = record["id"]
    try:
        rles = [to_rle(mask, question, f"mask of part {name!r}") for name, mask in zip(names, masks)]
        for name, rle in zip(names, rles):
            if list(rle["size"]) != [height, width]:
                return f"the mask of part {name!r} is {rle['size'][0]}x{rle['size'][1]}, the image {height}x{width}"
        check_rles(rles, [question] * len(rles), [f"mask of part {name!r}" for name in names])
    except ValueError as error:
        return str(error)
    return None


def _repair(path: Path, lines: list[bytes], keep: int):
    """Rewrites `path` with its first `keep` lines only, atomically (a temporary file renamed over it)."""
    atomic.write_bytes(path, b"".join(line + b"\n" for line in lines[:keep]))


def _parse(path: Path, lines: list[bytes], repair: bool, skipped: list):
    """`(line number, value)` for each non-empty line that is JSON; a torn last line is dropped with a warning (and,
    with `repair`, cut from the file); another bad line is listed in `skipped` with its number."""
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield index + 1, json.loads(line)
        except (
            ValueError,
            RecursionError,
        ) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if index == last:
                logger.warning("%s: the last line is incomplete (a run stopped mid-write); dropping it", path)
                if repair:
                    _repair(path, lines, index)
                return
            skipped.append((f"line {index + 1}", f"not valid JSON ({error})"))


def read_predictions(
    path, rows: Iterable[Mapping] | None = None, repair: bool = False
) -> tuple[dict | None, dict[str, dict], list[tuple[str, str]]]:
    """Reads and checks a predictions file against the dataset rows it is scored on.

    Args:
        path: the JSONL file (format in this module's docstring).
        rows: the dataset rows (dicts with `id`, `question_type`, `answer_choices`, `object_answer_choices`,
            `height`, `width`), e.g. `list(load_dataset(...)[split])`. None checks each record's own shape only (a run
            resuming from its own dump).
        repair: rewrite the file without a torn last line, atomically, so that its question is predicted again.

    Returns:
        `(header, records, skipped)`: the header dict (None for a file without one); the records by question id,
        each the line's dict as written (`chosen`, `object_chosen`, `masks`, `mask_parts`, `scores` ...; an explicit
        null `object_chosen` is removed, so it scores as a wrong object like an absent one); and what was left out, as
        `(question id or "line N", reason)` pairs: lines that are not JSON objects, records without a string `id`, ids
        not among `rows`, picks that are not an in-range non-bool int (`validate_record`) — the whole record is left
        out —, and bad masks (`mask_problem`) — the record keeps its picks and loses `masks` / `mask_parts`, so it is
        left out of Table 2 only. A torn last line is dropped with a warning, not listed.

    Raises:
        FileNotFoundError: no such file.
        DuplicateId (a ValueError): one question id on two lines; the message names it and both line numbers.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"predictions file not found: {path}") from None
    by_id = None if rows is None else {row["id"]: row for row in rows}
    header, records, first_line, skipped = None, {}, {}, []
    for number, value in _parse(path, lines, repair, skipped):
        if isinstance(value, dict) and "header" in value and "id" not in value:
            if header is None and isinstance(value["header"], dict):
                header = value["header"]
            else:
                skipped.append((f"line {number}", "a second header, or one that is not an object"))
            continue
        question = value.get("id") if isinstance(value, dict) else None
        if not isinstance(question, str):
            skipped.append((f"line {number}", validate_record(value)))
            continue
        if question in first_line:
            raise DuplicateId(
                f"{path}: question {question!r} has two predictions, on lines {first_line[question]} and {number}"
            )
        first_line[question] = number
        row = None if by_id is None else by_id.get(question)
        reason = validate_record(value, row)
        if reason is None and by_id is not None and row is None:
            reason = "not a question of the dataset rows scored (another config, split or --limit?)"
        if reason is not None:
            skipped.append((question, reason))
            continue
        records[question] = _checked(value, row, skipped)
    if skipped:
        logger.warning(
            "%s: %d predictions left out or stripped of their masks, e.g. %s", path, len(skipped), skipped[0]
        )
    return header, records, skipped


def _checked(record: dict, row: Mapping | None, skipped: list) -> dict:
    """The record as it will be scored: an explicit null `object_chosen` removed, and bad masks dropped (listed)."""
    if "object_chosen" in record and record["object_chosen"] is None:
        del record["object_chosen"]
    problem = None if row is None else mask_problem(record, row)
    if problem is not None:
        record.pop("masks", None)
        record.pop("mask_parts", None)
        skipped.append((record["id"], f"masks left out: {problem}"))
    return record
