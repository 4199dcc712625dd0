"""The demo's overlay pictures: for a question, the image, the ground truth and the model's teacher-forced masks side by
side (per-part IoU in the legend), with the correct answer and the answer the benchmark's protocol picked."""

from __future__ import annotations

from pathlib import Path

from partonomy_dataset import masks as rle
from partonomy_dataset.templates import PART_WHOLE_TYPES

from .drawing import compare


def answer_lines(row: dict, record: dict) -> list[str]:
    """The question, the correct answer and the pick (and for part-whole questions the object's), as text lines."""
    lines = [f"Q ({row['question_type']}): {row['question']}"]
    correct, chosen = row["correct_index"], record.get("chosen")
    lines.append(f"correct: {row['answer_choices'][correct]}")
    if chosen is not None:
        mark = "right" if chosen == correct else "wrong"
        lines.append(f"picked ({mark}): {row['answer_choices'][chosen]}")
    if row["question_type"] in PART_WHOLE_TYPES and record.get("object_chosen") is not None:
        objects, right = row["object_answer_choices"], row["object_correct_index"]
        mark = "right" if record["object_chosen"] == right else "wrong"
        lines.append(
            f"object: correct {objects[right]!r}, picked ({mark}) {objects[record['object_chosen']]!r}"
        )
    return lines


def overlay(row: dict, record: dict, scale: int = 3):
    truth = [rle.decode(m) for m in row["masks"]]
    predicted = [rle.decode(m) for m in record.get("masks") or []]
    return compare(
        row["image"], truth, predicted, list(row["parts"]), scale=scale, lines=answer_lines(row, record)
    )


def write_overlays(rows: list[dict], records: list[dict], out: Path, count: int) -> list[Path]:
    """`overlay_<k>_<object>.png` for the first question of the first `count` images."""
    by_id = {r["id"]: r for r in records}
    written, seen = [], set()
    for row in rows:
        if row["image_id"] in seen or row["id"] not in by_id:
            continue
        seen.add(row["image_id"])
        path = Path(out) / f"overlay_{len(written)}_{row['object'].replace(' ', '_')}.png"
        overlay(row, by_id[row["id"]]).save(path)
        written.append(path)
        if len(written) == count:
            break
    return written
