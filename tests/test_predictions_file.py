"""Predictions files (`eval_partonomy.py --from-predictions`, and the dump a run resumes from): every hostile line is
left out with its question id or line number and a reason, a duplicate id refuses the file, and nothing crashes."""

import json
import logging

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from plum_training.predictions import DuplicateId, mask_problem, read_predictions, validate_record

CHOICES = [f"It has part {i}." for i in range(5)]
ROWS = [
    {
        "id": "q-ident",
        "question_type": "identification",
        "answer_choices": CHOICES,
        "object_answer_choices": [],
    },
    {
        "id": "q-p2w",
        "question_type": "part2whole",
        "answer_choices": CHOICES,
        "object_answer_choices": ["a", "b"],
    },
    {
        "id": "q-w2p",
        "question_type": "whole2part",
        "answer_choices": CHOICES,
        "object_answer_choices": ["a", "b"],
    },
]
for _row in ROWS:
    _row.update(height=30, width=40)


def rle(height=30, width=40):
    mask = np.zeros((height, width), np.uint8)
    mask[2:9, 3:12] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": encoded["counts"].decode()}


def write(path, *lines):
    """Each line as JSON, or as given when it is already text / bytes."""
    encoded = [
        line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
        for line in lines
    ]
    path.write_bytes(b"".join(line + b"\n" for line in encoded))
    return path


def good_lines():
    return [
        {"header": {"format": "partonomy-predictions/1", "model": "m", "fingerprint": "f"}},
        {"id": "q-ident", "chosen": 1, "masks": {"wing": rle(), "tail": rle()}},
        {"id": "q-p2w", "chosen": 3, "object_chosen": 0, "masks": [rle()], "mask_parts": ["blade"]},
        {"id": "q-w2p", "chosen": 0, "object_chosen": 1, "scores": [0.1] * 5},
    ]


def test_a_clean_file_reads_as_eval_partonomy_read_it(tmp_path):
    import eval_partonomy

    path = write(tmp_path / "p.jsonl", *good_lines())
    header, records, skipped = read_predictions(path, ROWS)
    assert skipped == []
    assert (
        eval_partonomy.read_predictions is read_predictions
    )  # the script reads files through this one reader
    assert header["model"] == "m" and set(records) == {"q-ident", "q-p2w", "q-w2p"}
    assert records["q-p2w"]["mask_parts"] == ["blade"]
    assert read_predictions(path)[:2] == (header, records)  # without rows: the records' own shape only


def test_lines_that_are_not_prediction_records_are_skipped_with_their_line_numbers(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        "5",
        '"id"',
        "[1, 2]",
        {"id": [1]},
        {"id": {"a": 1}},
        {"chosen": 1},
        "{not json",
        b'{"id": "q-ident", "chosen": 1, "note": "\xff"}',  # not UTF-8
        {"header": "not an object"},
        {"id": "q-ident", "chosen": 2},
    )
    header, records, skipped = read_predictions(path, ROWS)
    assert header is None and records == {"q-ident": {"id": "q-ident", "chosen": 2}}
    assert [where for where, _ in skipped] == [f"line {n}" for n in range(1, 10)]
    reasons = dict(skipped)
    assert "must be a JSON object, got int" in reasons["line 1"] and "got str" in reasons["line 2"]
    assert "`id` must be a string, got list" in reasons["line 4"] and "got dict" in reasons["line 5"]
    assert "got NoneType" in reasons["line 6"] and "not valid JSON" in reasons["line 7"]
    assert "not valid JSON" in reasons["line 8"] and "header" in reasons["line 9"]


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"id": "q-ident", "chosen": "3"}, "`chosen` must be an integer index, got '3'"),
        ({"id": "q-ident", "chosen": 3.5}, "`chosen` must be an integer index, got 3.5"),
        ({"id": "q-ident", "chosen": True}, "`chosen` must be an integer index, got True"),
        ({"id": "q-ident", "chosen": 5}, "`chosen` 5 is not one of the 5 choices"),
        ({"id": "q-ident", "chosen": -1}, "`chosen` -1 is not one of the 5 choices"),
        ({"id": "q-p2w", "chosen": 1, "object_chosen": 42}, "`object_chosen` 42 is not one of the 2 choices"),
        ({"id": "q-w2p", "chosen": 1, "object_chosen": False}, "`object_chosen` must be an integer index"),
        ({"id": "q-ident", "chosen": 1, "object_chosen": "x"}, "`object_chosen` must be an integer index"),
        ({"id": "q-ident", "chosen": 1, "object_chosen": -1}, None),  # what non-part-whole rows carry
        (
            {"id": "q-ident", "chosen": 1, "object_chosen": 42},
            None,
        ),  # not range-checked: not a part-whole row
        ({"id": "q-w2p", "chosen": None, "object_chosen": 1}, None),  # no pick: left out of Table 3
        ({"id": "q-w2p", "chosen": 4, "object_chosen": 1}, None),
    ],
)
def test_picks_must_be_non_bool_ints_in_range_of_their_row(record, problem):
    row = next(r for r in ROWS if r["id"] == record["id"])
    found = validate_record(record, row)
    assert found == problem if problem is None else problem in found


def test_bad_picks_leave_their_record_out_and_null_object_picks_score_as_wrong(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        {"id": "q-ident", "chosen": "3", "masks": {"wing": rle()}},
        {"id": "q-p2w", "chosen": 1, "object_chosen": 42},
        {"id": "q-w2p", "chosen": 2, "object_chosen": None},
    )
    _, records, skipped = read_predictions(path, ROWS)
    assert records == {
        "q-w2p": {"id": "q-w2p", "chosen": 2}
    }  # null object pick removed: scores as a wrong one
    assert [where for where, _ in skipped] == ["q-ident", "q-p2w"]


def test_a_duplicate_id_refuses_the_file_naming_it_and_both_lines(tmp_path):
    path = write(tmp_path / "p.jsonl", *good_lines()[:3], {"id": "q-ident", "chosen": 4})
    with pytest.raises(
        DuplicateId, match=r"p.jsonl: question 'q-ident' has two predictions, on lines 2 and 4"
    ):
        read_predictions(path, ROWS)
    with pytest.raises(ValueError, match="on lines 2 and 4"):  # a ValueError, also without rows
        read_predictions(path)
    unknown = write(
        tmp_path / "u.jsonl", {"id": "elsewhere", "chosen": 1}, {"id": "elsewhere", "chosen": "x"}
    )
    with pytest.raises(DuplicateId, match="'elsewhere' has two predictions, on lines 1 and 2"):
        read_predictions(unknown, ROWS)


def test_ids_not_in_the_dataset_are_counted_and_skipped(tmp_path):
    path = write(tmp_path / "p.jsonl", *good_lines(), {"id": "core-other-identification", "chosen": 1})
    _, records, skipped = read_predictions(path, ROWS)
    assert set(records) == {"q-ident", "q-p2w", "q-w2p"}
    assert (
        skipped == [("core-other-identification", skipped[0][1])]
        and "not a question of the dataset" in skipped[0][1]
    )
    assert read_predictions(path, ROWS[:1])[1].keys() == {"q-ident"}  # e.g. --limit 1


@pytest.mark.parametrize(
    "masks, extra, problem",
    [
        (
            {"wing": {"size": [30, 40], "counts": "!!!!"}},
            {},
            "'wing' is a malformed RLE: its counts do not decode",
        ),
        ({"wing": {"size": [30, 40], "counts": "0"}}, {}, "its runs cover 0 pixels, not height*width = 1200"),
        ({"wing": rle(10, 10)}, {}, "the mask of part 'wing' is 10x10, the image 30x40"),
        ({"wing": {**rle(), "size": [30.5, 40]}}, {}, "'size' must be [height, width] as two integers"),
        ({"wing": {**rle(), "size": [30.0, 40.0]}}, {}, None),
        ({"wing": {"size": [30, 40], "counts": [1200]}}, {}, None),  # uncompressed counts
        ({"wing": {"size": [30, 40], "counts": [1199]}}, {}, "uncompressed counts sum to 1199"),
        ({"wing": [1, 2]}, {}, "must be an RLE dict"),
        ([rle(), rle()], {"mask_parts": ["wing"]}, "`masks` is a list of 2 but `mask_parts`"),
        ([rle()], {}, "`masks` is a list of 1 but `mask_parts`"),
        ({"wing": rle()}, {"mask_parts": None}, None),
        ("x", {}, "`masks` must be {part name: RLE} or a list"),
    ],
)
def test_mask_problems_name_the_question(masks, extra, problem):
    found = mask_problem({"id": "q-ident", "chosen": 1, "masks": masks, **extra}, ROWS[0])
    assert found == problem if problem is None else problem in found


def test_a_bad_mask_costs_its_record_the_masks_not_the_picks(tmp_path):
    path = write(
        tmp_path / "p.jsonl",
        {"id": "q-ident", "chosen": 1, "masks": {"wing": {"size": [8.7, 8.2], "counts": "0"}}},
        {"id": "q-p2w", "chosen": 1, "object_chosen": 0, "masks": [rle(10, 10)], "mask_parts": ["blade"]},
        {"id": "q-w2p", "chosen": 1, "object_chosen": 0, "masks": {"blade": rle()}},
    )
    _, records, skipped = read_predictions(path, ROWS)
    assert records["q-ident"] == {"id": "q-ident", "chosen": 1}  # left out of Table 2 only
    assert records["q-p2w"] == {"id": "q-p2w", "chosen": 1, "object_chosen": 0}
    assert records["q-w2p"]["masks"] == {"blade": rle()}
    assert [where for where, _ in skipped] == ["q-ident", "q-p2w"]
    assert "masks left out: image q-ident: mask of part 'wing' is a malformed RLE: 'size'" in skipped[0][1]


def test_a_torn_last_line_is_dropped_with_a_warning_and_repaired_atomically(tmp_path, caplog):
    lines = good_lines()
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + json.dumps(lines[1])[:25])
    with caplog.at_level(logging.WARNING):
        header, records, skipped = read_predictions(path, ROWS)
    assert "the last line is incomplete" in caplog.text and skipped == [] and len(records) == 3
    assert path.read_text().endswith(json.dumps(lines[1])[:25])  # without `repair` the file is left as it is
    read_predictions(path, ROWS, repair=True)
    assert path.read_text() == "".join(json.dumps(line) + "\n" for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # no temporary file left
    torn_inside = write(tmp_path / "q.jsonl", lines[1], '{"id": "q-p2w", "cho', lines[3])
    _, records, skipped = read_predictions(torn_inside, ROWS)
    assert set(records) == {"q-ident", "q-w2p"} and skipped[0][0] == "line 2"
    with pytest.raises(FileNotFoundError, match="predictions file not found: .*nowhere.jsonl"):
        read_predictions(tmp_path / "nowhere.jsonl", ROWS)
