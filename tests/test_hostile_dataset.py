"""Hostile inputs to the PARTONOMY builder: each bad record is counted and skipped with its id and reason, paths out of
the source folder are refused, nothing outside it is embedded, no allocation is unbounded, the good records come out
intact, and the folder a build writes stays loadable whatever happens mid-build."""

import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

import datasets
import numpy as np
import pytest
from PIL import Image

from partonomy_dataset import __main__ as cli
from partonomy_dataset import hub_folder, instances, masks, released
from partonomy_dataset.instances import ReadStats, SkippedRecord, image_size
from partonomy_dataset.paths import NO_PATH, OUTSIDE, resolve_inside
from partonomy_dataset.sources import core, partimagenet

from .test_released_and_bad_records import released_records
from .test_sources import box_polygon, rle_of_box, write_core, write_image


def build_core(out, qa_json):
    return cli.main(["build", "--config", "core", "--qa-json", f"test={qa_json}", "--out", str(out)])


def load(folder, cache):
    """The built rows, read through a fresh cache (so that an old cached copy cannot stand in for the files)."""
    return datasets.load_dataset(str(folder), "core", split="test", cache_dir=str(cache))


def report(folder):
    return hub_folder.built_configs(folder)["core"]


def write_secret(path):
    """An image outside the source folder, with bytes no image inside it has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((30, 40, 3), (200, 10, 10), np.uint8)).save(path)
    return path.read_bytes()


def png_header(path, width, height):
    """A tiny PNG file whose header declares `width` x `height` (its pixel data is a few bytes)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def good_records(root):
    """A released identification record (its image found by name: the authors' absolute path) and a part_to_whole
    one, with their images, as the reference release writes them."""
    identification, part_to_whole = released_records(root)[:2]
    return identification, part_to_whole


def read_released(root, records):
    (root / "qa.json").write_text(json.dumps(records))
    stats = ReadStats()
    return released.read_qa_file(root / "qa.json", "core", stats), stats


# ------------------------------------------------------------------------------------------- 1: polygons


@pytest.mark.parametrize(
    "coordinate, problem",
    [
        (float("nan"), "polygons with NaN or infinite coordinates"),
        (float("inf"), "polygons with NaN or infinite coordinates"),
        (1e15, "polygons far outside their image"),
        ("x", "polygons with non-numeric coordinates"),
    ],
)
def test_released_polygons_are_checked_before_pycocotools(tmp_path, monkeypatch, coordinate, problem):
    identification, _ = good_records(tmp_path)
    hostile = {**identification, "segmentations": {"wing": [{"polygon": [[0, 0, coordinate, 0, 10, 10]]}]}}
    checked = []
    original = masks.checked_polygons
    monkeypatch.setattr(
        masks, "checked_polygons", lambda *a: checked.append(a) or original(*a)
    )  # the one check
    rows, stats = read_released(tmp_path, [identification, hostile])
    assert [row["question"] for row in rows] == [identification["question"]] and len(checked) == 1
    assert stats.skipped[released.MALFORMED] == 1
    ((where, why),) = stats.bad_files
    assert where.endswith("qa.json record 1") and f"part 'wing': {problem}" in why


# ------------------------------------------------------------------------------------------- 2: paths


def test_released_image_paths_that_leave_the_folder_are_refused(tmp_path):
    secret = write_secret(tmp_path / "secret" / "x.png")
    source = tmp_path / "release"
    identification, _ = good_records(source)
    (source / "images" / "link.png").symlink_to(tmp_path / "secret" / "x.png")
    hostile_paths = [
        "../secret/x.png",
        str(tmp_path / "secret" / "x.png"),
        "images/link.png",
        "images/../../secret/x.png",
    ]
    records = [identification] + [{**identification, "image_path": path} for path in hostile_paths]
    (source / "qa.json").write_text(json.dumps(records))
    assert build_core(tmp_path / "out", source / "qa.json") == 0
    rows = load(tmp_path / "out", tmp_path / "cache")
    assert len(rows) == 1 and rows[0]["image_id"] == "agri_1"
    built = report(tmp_path / "out")
    assert built["skipped_reading"][OUTSIDE] == 4
    for (where, why), path in zip(built["bad_files"], hostile_paths):
        assert repr(path) in why and "source folder" in why, (where, why)
    shards = b"".join(p.read_bytes() for p in (tmp_path / "out" / "data" / "core").glob("*.parquet"))
    assert secret not in shards  # no byte of the outside image embedded


def test_coco_file_names_that_leave_the_folder_are_refused(tmp_path):
    secret = tmp_path / "secret" / "x.JPEG"
    write_secret(secret)
    root = tmp_path / "pim"
    write_image(root / "good.JPEG")
    (root / "link.JPEG").symlink_to(secret)
    names = ["good.JPEG", "../secret/x.JPEG", str(secret), "link.JPEG", "images/../../secret/x.JPEG"]
    data = {
        "images": [{"id": i, "file_name": name, "width": 40, "height": 30} for i, name in enumerate(names)],
        "categories": [{"id": 0, "name": "Head", "supercategory": "Quadruped"}],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]}
            for i in range(len(names))
        ],
    }
    (root / "train.json").write_text(json.dumps(data))
    stats = ReadStats()
    found = partimagenet.read_dir(root, stats)
    assert [(i.image_id, i.image_path) for i in found] == [("0", str(root / "good.JPEG"))]
    assert stats.skipped[OUTSIDE] == 4 and stats.skipped["annotations of a skipped image"] == 4
    refused = [why for _, why in stats.bad_files]
    assert all(repr(name) in why for name, why in zip(names[1:], refused))
    with pytest.raises(ValueError, match=r"image 1.*'\.\./secret/x\.JPEG' leaves the source folder"):
        partimagenet.read_file(
            root / "train.json"
        )  # by hand, without stats: the first bad record is an error


@pytest.mark.parametrize(
    "name, outcome",
    [
        ("images/x.png", "found"),
        ("x.png", "found"),  # by its name under images/
        ("images/../images/x.png", "found"),
        ("../x.png", OUTSIDE),
        ("/elsewhere/x.png", "found"),  # the authors' absolute path: by its name under images/
        ("/elsewhere/y.png", OUTSIDE),
        ("..", OUTSIDE),
        ("y" * 5000, NO_PATH),  # the file system cannot even look it up
        ("", NO_PATH),
        (None, NO_PATH),
        ("a\ud800.png", "missing"),
        ("a\x00.png", "missing"),
    ],
)
def test_resolve_inside(tmp_path, name, outcome):
    write_image(tmp_path / "root" / "images" / "x.png")
    try:
        found = resolve_inside(tmp_path / "root", name, ("images",))
    except FileNotFoundError:
        assert outcome == "missing"
    except SkippedRecord as error:
        assert error.reason == outcome
    else:
        assert outcome == "found" and found.resolve() == (tmp_path / "root" / "images" / "x.png").resolve()


def test_core_mask_image_paths_that_leave_the_folder_are_refused(tmp_path):
    write_core(tmp_path / "core")
    write_secret(tmp_path / "secret" / "x.jpg")
    record = {**rle_of_box(0, 0, 5, 5), "image_path": "../secret/x.jpg", "is_root_concept": False}
    (tmp_path / "core" / "masks" / "kitchen--chef_knife--part:blade" / "out.json").write_text(
        json.dumps(record)
    )
    stats = ReadStats()
    found = core.read_dir(tmp_path / "core", stats)
    assert all("secret" not in str(i.image_path) for i in found) and len(found) == 2
    assert stats.skipped[OUTSIDE] == 1 and "out.json" in stats.bad_files[0][0]


# ------------------------------------------------------------------------------------------- 3: bad records


def test_one_bad_released_record_never_takes_the_build_down(tmp_path):
    source = tmp_path / "release"
    identification, part_to_whole = good_records(source)
    png_header(source / "images" / "huge.png", 20000, 20000)
    (source / "object_names.json").write_text(json.dumps(["not", "a", "mapping"]))
    hostile = [
        {**identification, "image_label": 5},
        {**identification, "segmentations": [rle_of_box(0, 10, 40, 15)]},
        {**identification, "id": ["a", "list"]},
        {**identification, "object": {"a": "dict"}},
        {**identification, "bbox": "x"},
        {**identification, "bbox": [0, 0, float("nan"), 1]},
        {**identification, "question": "What does the \ud800 have?"},
        {**identification, "answer_parts": [["wing"], ["\ud800"], ["tail"]]},
        {**part_to_whole, "object_answer_classes": ["bread knife"]},  # shorter than the correct index 1
        {**part_to_whole, "object_answer_types": ["incorrect"] * 4 + ["correct"]},  # object 4 of 2 choices
        {**part_to_whole, "object_answer_choices": "It is a chef knife."},
        {**identification, "answer_choices": [1, 2]},
        {**identification, "segmentations": {"wing": {"size": [30, 40], "counts": "0"}}},
    ]
    huge = {**identification, "image_path": "images/huge.png"}  # a PNG header declaring 20000 x 20000
    records = [identification, *hostile, part_to_whole, "a string", 5, huge]
    (source / "qa.json").write_text(
        json.dumps(records)
    )  # json.dumps writes "\ud800" as the escape json allows
    assert build_core(tmp_path / "out", source / "qa.json") == 0
    rows = load(tmp_path / "out", tmp_path / "cache")
    assert [row["question_type"] for row in rows] == ["identification", "part2whole"]
    assert rows[1]["object"] == "chef knife" and rows[1]["object_correct_index"] == 1
    built = report(tmp_path / "out")
    assert built["skipped_reading"][released.MALFORMED] == len(hostile) + 2
    assert built["skipped_reading"]["object_names.json files that are not a name mapping (ignored)"] == 1
    assert built["skipped_reading"][instances.TOO_LARGE] == 1
    listed = [where for where, _ in built["bad_files"]]
    for index in range(1, len(hostile) + 1):
        assert any(where.endswith(f"record {index}") or f"record {index} (" in where for where in listed), (
            index
        )
    assert any("(id ['a', 'list'])" in where for where in listed)
    whys = " | ".join(why for _, why in built["bad_files"])
    for reason in (
        "image_label must be a string",
        "segmentations must map",
        "id must be a string",
        "bbox must be",
    ):
        assert reason in whys
    assert "lone surrogate" in whys and "object_answer_classes has 1 entries" in whys
    assert "object_answer_types has 5 entries for 2 object_answer_choices" in whys


def test_object_names_that_are_not_a_mapping_leave_the_core_reader_running(tmp_path):
    write_core(tmp_path)
    (tmp_path / "object_names.json").write_text(json.dumps(["agricultural airplane"]))
    stats = ReadStats()
    found = {i.object for i in core.read_dir(tmp_path, stats)}
    assert found == {"agricultural", "chef knife"}  # the folder names
    assert stats.skipped["object_names.json files that are not a name mapping (ignored)"] == 1
    (tmp_path / "object_names.json").write_text(json.dumps({"airplanes--agricultural": 5}))
    assert {i.object for i in core.read_dir(tmp_path, ReadStats())} == {"agricultural", "chef knife"}


def test_coco_entries_that_are_not_objects_are_skipped(tmp_path):
    write_image(tmp_path / "good.JPEG")
    data = {
        "images": [
            "a string",
            {"id": [1], "file_name": "good.JPEG"},
            {"id": 1, "file_name": "good.JPEG", "width": 40, "height": 30},
        ],
        "categories": [
            "x",
            {"id": 0, "name": "Head", "supercategory": "Quadruped"},
            {"id": 1, "name": "\ud800"},
        ],
        "annotations": [
            "a string",
            7,
            {"id": 1, "image_id": [1], "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
            {"id": 2, "image_id": 1, "category_id": {"a": 0}, "segmentation": [box_polygon(0, 0, 10, 10)]},
            {"id": 3, "image_id": 1, "category_id": 0, "segmentation": "x"},
            {"id": 4, "image_id": 1, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    stats = ReadStats()
    (quadruped,) = partimagenet.read_dir(tmp_path, stats)
    assert quadruped.parts.keys() == {"head"} and masks.area(quadruped.parts["head"]) == 100
    assert stats.skipped["annotation entries that are not objects"] == 2
    assert stats.skipped["image entries without an int or string id"] == 2
    assert stats.skipped["categories without a name"] == 2
    assert stats.skipped["annotations with unknown image or category"] == 2
    assert not [
        f for f, _ in stats.bad_files if f == str(tmp_path / "train.json")
    ]  # the file itself was kept


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path):
    png_header(tmp_path / "bomb.png", 20000, 20000)  # PIL's DecompressionBombError
    png_header(tmp_path / "warned.png", 9000, 9000)  # PIL would only warn: our limit refuses it
    for name in ("bomb.png", "warned.png"):
        with pytest.raises(SkippedRecord, match=f"image .*{name}") as error:
            image_size(tmp_path / name)
        assert error.value.reason == instances.TOO_LARGE
    assert 9000 * 9000 > instances.MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
    width, height = 40, 30
    png_header(tmp_path / "huge_json.png", width, height)
    image = {"id": 3, "file_name": "huge_json.png", "width": 10**6, "height": 10**6}
    data = {"images": [image], "categories": [{"id": 0, "name": "Quadruped Head"}], "annotations": []}
    (tmp_path / "a.json").write_text(json.dumps(data))
    stats = ReadStats()
    partimagenet.read_file(tmp_path / "a.json", tmp_path, stats)  # a json that declares 10^12 pixels
    assert stats.skipped[instances.TOO_LARGE] == 1


# ------------------------------------------------------------------------------------------- 4: atomic folder


def _two_question_sets(tmp_path):
    source = tmp_path / "release"
    identification, part_to_whole = good_records(source)
    (source / "old.json").write_text(json.dumps([identification]))
    (source / "new.json").write_text(json.dumps([identification, part_to_whole]))
    return source / "old.json", source / "new.json"


def test_a_card_that_fails_mid_build_leaves_the_old_data_loadable(tmp_path, monkeypatch):
    old, new = _two_question_sets(tmp_path)
    out = tmp_path / "out"
    assert build_core(out, old) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def failing_card(*args, **kwargs):
        raise RuntimeError("card_text failed")

    monkeypatch.setattr(hub_folder, "card_text", failing_card)
    with pytest.raises(RuntimeError, match="card_text failed"):
        build_core(out, new)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert len(load(out, tmp_path / "cache")) == 1


def test_a_record_whose_object_index_is_out_of_range_is_caught_before_the_card(tmp_path):
    source = tmp_path / "release"
    identification, part_to_whole = good_records(source)
    hostile = {**part_to_whole, "object_answer_types": ["incorrect"] * 4 + ["correct"]}
    rows, stats = read_released(source, [identification, hostile])
    assert len(rows) == 1 and stats.skipped[released.MALFORMED] == 1


def _shards(folder):
    return sorted(p.name for p in (folder / "data" / "core").glob("*.parquet"))


@pytest.mark.parametrize("killed_after", ["new shards moved in", "report moved in", "card written"])
def test_a_build_killed_inside_the_swap_leaves_a_loadable_folder(tmp_path, killed_after):
    """Each kill point of the swap, as the files stand there: `load_dataset` reads the old data until the card lists
    the new, and the next build settles what was left."""
    old, new = _two_question_sets(tmp_path)
    out, other = tmp_path / "out", tmp_path / "other"
    assert build_core(out, old) == 0 and build_core(other, new) == 0
    old_shards, new_shards = _shards(out), _shards(other)
    for name in new_shards:
        shutil.copy(other / "data" / "core" / name, out / "data" / "core" / name)
    if killed_after != "new shards moved in":
        shutil.copy(
            other / "data" / "core" / hub_folder.BUILD_INFO, out / "data" / "core" / hub_folder.BUILD_INFO
        )
    if killed_after == "card written":
        shutil.copy(other / "README.md", out / "README.md")
    assert len(load(out, tmp_path / "cache-killed")) == (2 if killed_after == "card written" else 1)
    done = hub_folder.remove_stale_partials(out)
    settled = {
        "new shards moved in": [f"removed core/{name}" for name in new_shards],
        "report moved in": ["wrote the card for core"] + [f"removed core/{name}" for name in old_shards],
        "card written": [f"removed core/{name}" for name in old_shards],
    }
    assert done == settled[killed_after]
    expected = old_shards if killed_after == "new shards moved in" else new_shards
    assert _shards(out) == expected
    assert len(load(out, tmp_path / "cache-settled")) == (1 if expected == old_shards else 2)
    assert build_core(out, old) == 0 and _shards(out) == old_shards  # and the next build goes through
    assert sorted(p.name for p in (out / "data").iterdir()) == ["core"]


@pytest.mark.parametrize("killed_after", ["old moved aside", "new moved in", "card written"])
def test_a_retired_folder_is_restored_unless_its_replacement_is_whole_and_listed(tmp_path, killed_after):
    """What builds that swapped whole folders left (`.old`, the only copy of the old data) is never just deleted."""
    old, new = _two_question_sets(tmp_path)
    out, other = tmp_path / "out", tmp_path / "other"
    assert build_core(out, old) == 0 and build_core(other, new) == 0
    old_shards, new_shards = _shards(out), _shards(other)
    retired = out / "data" / ".core.0123abcd.old"
    (out / "data" / "core").replace(retired)
    if killed_after != "old moved aside":
        shutil.copytree(other / "data" / "core", out / "data" / "core")
    if killed_after == "card written":
        shutil.copy(other / "README.md", out / "README.md")
    assert hub_folder.remove_stale_partials(out)[0].endswith(retired.name) and not retired.exists()
    expected = new_shards if killed_after == "card written" else old_shards
    assert _shards(out) == expected
    assert len(load(out, tmp_path / "cache")) == (2 if killed_after == "card written" else 1)


# ------------------------------------------------------------------------------------------- 5: COCO, ids, export


def test_one_bad_coco_annotation_or_image_costs_only_itself(tmp_path):
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.JPEG")
    data = {
        "images": [
            {"id": 1, "file_name": "a.JPEG", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.JPEG", "height": 30},  # no width
            {"id": 3, "file_name": "c.JPEG", "width": 40, "height": 30},
        ],
        "categories": [
            {"id": 0, "name": "Head", "supercategory": "Quadruped"},
            {"id": 1, "name": "Quadruped Tail"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": rle_of_box(0, 0, 5, 5, width=41)},
            {"id": 12, "image_id": 2, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
            {"id": 13, "image_id": 3, "category_id": 0, "segmentation": rle_of_box(0, 0, 4, 4)},
            {"id": 14, "image_id": 3, "category_id": 1, "segmentation": {"size": [30, 40], "counts": "0"}},
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    stats = ReadStats()
    found = {i.image_id: i for i in partimagenet.read_dir(tmp_path, stats)}
    assert (
        sorted(found) == ["1", "3"]
        and list(found["1"].parts) == ["head"]
        and list(found["3"].parts) == ["head"]
    )
    assert stats.skipped["annotations whose mask size differs from their image"] == 1
    assert stats.skipped["images without a usable width / height"] == 1
    assert stats.skipped["annotations of a skipped image"] == 1
    assert stats.skipped["malformed RLE masks"] == 1
    whys = dict(stats.bad_files)
    assert "mask size [30, 41] differs" in whys[f"{tmp_path / 'train.json'} annotation 11"]
    assert "no usable width / height" in whys[f"{tmp_path / 'train.json'} image 2"]


def test_question_ids_stay_unique_and_deterministic(tmp_path):
    assert released.unique_ids(["q", "q", "q-2"]) == ["q", "q-3", "q-2"]
    assert released.unique_ids(["q", "q", "q", "q-3", "r"]) == ["q", "q-2", "q-4", "q-3", "r"]
    identification, _ = good_records(tmp_path)
    records = [{**identification, "id": i} for i in ("q", "q", "q-2")]
    rows, _ = read_released(tmp_path, records)
    assert [row["id"] for row in rows] == ["q", "q-3", "q-2"]
    ids = [row["id"] for row in read_released(tmp_path, records)[0]]
    assert ids == ["q", "q-3", "q-2"]


def test_export_gives_two_images_of_one_name_two_files(tmp_path):
    source = tmp_path / "release"
    identification, _ = good_records(source)
    rows, _ = read_released(source, [identification])
    (row,) = rows
    pixels = [np.full((30, 40, 3), value, np.uint8) for value in (30, 220)]
    exported = []
    for folder, image in zip(("a", "b"), pixels):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        exported.append({**row, "image": {"bytes": buffer.getvalue(), "path": f"{folder}/x.png"}})
    out = released.export_qa(exported + exported[:1], tmp_path / "export" / "qa.json")
    records = json.loads(out.read_text())
    paths = [r["image_path"] for r in records]
    assert paths[0] == "images/x.png" and paths[1] != paths[0] and paths[2] == paths[0]
    for record, item in zip(records, exported + exported[:1]):
        assert (out.parent / record["image_path"]).read_bytes() == item["image"]["bytes"]
    hostile = {**exported[0], "image": {"bytes": b"png", "path": ".."}, "image_id": "../up"}
    (record,) = json.loads(released.export_qa([hostile], tmp_path / "e2" / "qa.json").read_text())
    assert (
        record["image_path"] == "images/up.png"
        and (tmp_path / "e2" / "images" / "up.png").read_bytes() == b"png"
    )


# ------------------------------------------------------------------------------------------- 6: unusable images


def test_images_and_masks_nothing_downstream_can_use_are_skipped(tmp_path):
    from modeling_plum.processing_plum import MIN_IMAGE_SIDE

    assert instances.min_image_side() == MIN_IMAGE_SIDE
    identification, _ = good_records(tmp_path)
    jpeg = (tmp_path / "images" / "agri_1.jpg").read_bytes()
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
        noisy, "JPEG"
    )
    (tmp_path / "images" / "truncated.jpg").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    write_image(tmp_path / "images" / "tiny.png", width=1, height=1)
    write_image(tmp_path / "images" / "thin.png", width=40, height=MIN_IMAGE_SIDE - 1)
    assert jpeg  # the good image is a real JPEG
    records = [
        identification,
        {**identification, "image_path": "images/truncated.jpg"},
        {
            **identification,
            "image_path": "images/tiny.png",
            "segmentations": {"wing": [rle_of_box(0, 0, 1, 1, 1, 1)]},
        },
        {**identification, "image_path": "images/thin.png"},
        {**identification, "segmentations": {"wing": [rle_of_box(0, 0, 0, 0)]}},  # an empty mask only
        {
            **identification,
            "segmentations": {"wing": [rle_of_box(0, 10, 40, 15)], "spraying rig": [rle_of_box(0, 0, 0, 0)]},
        },
    ]
    rows, stats = read_released(tmp_path, records)
    assert [row["parts"] for row in rows] == [["wing", "spraying rig"], ["wing"]]
    assert stats.skipped[instances.UNREADABLE] == 1 and stats.skipped[instances.TOO_SMALL] == 2
    assert stats.skipped[released.EMPTY_MASK] == 1 and stats.skipped[released.NO_MASK] == 1
    assert "truncated" in dict(stats.bad_files)[f"{tmp_path / 'qa.json'} record 1"]


def test_coco_parts_with_empty_masks_and_truncated_images_are_skipped(tmp_path):
    write_image(tmp_path / "a.JPEG")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(
        noisy, "JPEG"
    )
    (tmp_path / "b.JPEG").write_bytes(noisy.getvalue()[:200])
    data = {
        "images": [
            {"id": 1, "file_name": "a.JPEG", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.JPEG", "width": 40, "height": 30},
        ],
        "categories": [{"id": 0, "name": "Quadruped Head"}, {"id": 1, "name": "Quadruped Tail"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [box_polygon(45, 0, 60, 10)],
            },  # clipped away
            {"id": 3, "image_id": 2, "category_id": 0, "segmentation": [box_polygon(0, 0, 10, 10)]},
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    stats = ReadStats()
    (found,) = partimagenet.read_dir(tmp_path, stats)
    assert found.image_id == "1" and list(found.parts) == ["head"]
    assert stats.skipped[instances.EMPTY_PART] == 1 and stats.skipped[instances.UNREADABLE] == 1
    assert "part 'tail' has an empty mask" in " ".join(why for _, why in stats.bad_files)


# ------------------------------------------------------------------------------------------- 9: killed builds' temp


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temp_folders_of_killed_builds_are_removed(tmp_path, monkeypatch):
    long_ago = time.time() - 3600
    folders = {}
    for name, pid in (("dead", dead_pid()), ("alive", os.getppid()), ("garbage", "x"), ("no-owner", None)):
        folder = tmp_path / f"{cli.BUILD_DIR_PREFIX}{name}"
        (folder / "cache").mkdir(parents=True)
        if pid is not None:
            (folder / cli.OWNER_FILE).write_text(str(pid))
        os.utime(folder, (long_ago, long_ago))
        folders[name] = folder
    recent = tmp_path / f"{cli.BUILD_DIR_PREFIX}recent"  # a build that started after this one
    recent.mkdir()
    (recent / cli.OWNER_FILE).write_text(str(dead_pid()))
    (tmp_path / f"{cli.BUILD_DIR_PREFIX}not-a-folder").write_text("x")
    removed = cli.remove_stale_build_dirs(tmp_path, started=time.time() - 60)
    assert removed == [folders["dead"]] and not folders["dead"].exists()
    assert all(folders[name].exists() for name in ("alive", "garbage", "no-owner")) and recent.exists()

    os.utime(recent, (long_ago, long_ago))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _, new = _two_question_sets(tmp_path)
    assert (
        build_core(tmp_path / "out", new) == 0
    )  # a build cleans up what killed builds left, and after itself
    left = sorted(p.name for p in tmp_path.glob(f"{cli.BUILD_DIR_PREFIX}*"))
    assert left == [f"{cli.BUILD_DIR_PREFIX}{n}" for n in ("alive", "garbage", "no-owner", "not-a-folder")]
    assert math.isclose(len(load(tmp_path / "out", tmp_path / "cache")), 2)
