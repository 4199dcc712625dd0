"""PARTONOMY data as it really arrives: the released question sets (loaded as released; export → import round trip),
VLPart's Pascal-Part json written from the real `.mat` files, and bad records that are counted and skipped while the
good ones come out intact."""

import json
import shutil

import datasets
import numpy as np
import scipy.io
from PIL import Image

from partonomy_dataset import __main__ as cli
from partonomy_dataset import masks
from partonomy_dataset.hub_folder import built_configs
from partonomy_dataset.instances import ReadStats
from partonomy_dataset.sources import partimagenet, pascal_part

from .test_sources import box_polygon, rle_of_box, uncompressed_counts, write_image


def build(out, config, *extra):
    return cli.main(["build", "--config", config, "--out", str(out), *extra])


def report(folder, config):
    return built_configs(folder)[config]


# ------------------------------------------------------------------------------------------- released questions


def released_records(root):
    """Records in the reference release's format (`QAPair.to_dict()`), images under `images/`."""
    write_image(root / "images" / "agri_1.jpg")  # 40 x 30
    write_image(root / "images" / "knife_1.jpg")
    wing_a, wing_b = rle_of_box(0, 10, 20, 15), rle_of_box(20, 10, 40, 15)
    rig = np.zeros((30, 40), np.uint8)
    rig[20:25, 5:35] = 1
    identification = {
        "image_path": "/home/authors/partonomy/images/agri_1.jpg",  # the authors' machine: found by name
        "image_label": "airplanes--agricultural",
        "question": "What visible parts does the agricultural airplane in the image have?",
        "question_type": "identification_with_label",
        "answer_choices": ["It has a wing.", "It has a wing and a spraying rig.", "It has a tail."],
        "answer_types": ["incorrect", "correct", "incorrect"],
        "answer_parts": [["wing"], ["wing", "spraying rig"], ["tail"]],
        "segmentations": {
            "wing": [wing_a, {"segmentation": wing_b}],  # two RLEs: unioned
            "spraying rig": [{"size": [30, 40], "counts": uncompressed_counts(rig)}],
            "tail": [rle_of_box(0, 0, 3, 3)],  # a wrong choice's part: not a ground-truth mask
        },
        "object_question": None,
        "object_answer_choices": None,
        "object_answer_types": None,
        "object_answer_classes": None,
    }
    part_to_whole = {
        "image_path": "images/knife_1.jpg",
        "image_label": "kitchen--chef_knife",
        "question": "What visible parts does the object in the image have?",
        "question_type": "part_to_whole",
        "answer_choices": ["It has a blade.", "It has a blade and a handle."],
        "answer_types": ["incorrect", "correct"],
        "answer_parts": [["blade"], ["blade", "handle"]],
        "segmentations": {
            "blade": [{"polygon": [box_polygon(0, 0, 30, 5)], "size": [30, 40]}],
            "handle": [rle_of_box(30, 0, 40, 5)],
        },
        "object_question": "What is the object in the image?",
        "object_answer_choices": ["It is a bread knife.", "It is a chef knife."],
        "object_answer_types": ["incorrect", "correct"],
        "object_answer_classes": ["bread knife", "chef knife"],
    }
    negative = {
        **identification,
        "question": "What visible parts does the agricultural airplane in the image have which a glider does not have?",
        "question_type": "negative",
        "answer_choices": ["It has a spraying rig.", "It has a wing."],
        "answer_types": ["correct", "incorrect"],
        "answer_parts": [["spraying rig"], ["wing"]],
    }
    bad = [
        {**identification, "image_path": "images/missing.jpg"},  # no such image
        {**identification, "answer_types": ["correct", "correct", "incorrect"]},  # two correct answers
        {**identification, "question_type": "counting"},  # unknown type
        {**identification, "segmentations": {"wing": [rle_of_box(0, 0, 5, 5, width=41)], "spraying rig": []}},
        {
            **identification,
            "segmentations": {"wing": [{"size": [30, 40], "counts": "0123"}]},
        },  # malformed RLE
        "not a record",
    ]
    return [identification, part_to_whole, negative, *bad]


def test_core_builds_from_its_released_questions(tmp_path):
    source = tmp_path / "core"
    records = released_records(source)
    (source / "partonomy_qa_pairs.json").write_text(json.dumps(records))
    (source / "object_names.json").write_text(
        json.dumps({"airplanes--agricultural": "agricultural airplane"})
    )
    assert build(tmp_path / "out", "core", "--source-dir", str(source)) == 0
    rows = list(datasets.load_dataset(str(tmp_path / "out"), "core", split="test"))
    assert len(rows) == 3
    plane, knife, negative = rows
    assert (
        plane["question"] == records[0]["question"]
        and plane["answer_choices"] == records[0]["answer_choices"]
    )
    assert plane["correct_index"] == 1 and plane["parts"] == ["wing", "spraying rig"]  # order as released
    assert plane["question_type"] == "identification"
    assert plane["released_question_type"] == "identification_with_label"
    assert plane["object"] == "agricultural airplane" and plane["object_category"] == "airplanes"
    assert masks.area(plane["masks"][0]) == 40 * 5  # the two wing RLEs unioned
    assert masks.area(plane["masks"][1]) == 30 * 5  # uncompressed counts
    assert plane["image"].size == (40, 30) and plane["image_id"] == "agri_1"
    assert knife["question_type"] == "part2whole" and knife["object"] == "chef knife"
    assert (
        knife["object_answer_choices"] == records[1]["object_answer_choices"]
        and knife["object_correct_index"] == 1
    )
    assert masks.area(knife["masks"][0]) == 30 * 5  # a polygon
    assert negative["question_type"] == "difference" and negative["released_question_type"] == "negative"
    built = report(tmp_path / "out", "core")
    assert built["question_set"] == {"kind": "released", "files": {"test": "partonomy_qa_pairs.json"}}
    assert built["skipped_reading"]["questions whose image is missing"] == 1
    assert built["skipped_reading"]["malformed question records"] == 5
    card = (tmp_path / "out" / "README.md").read_text()
    assert "released questions, loaded as released from `partonomy_qa_pairs.json` (test)" in card
    assert "malformed question records" in card


def test_qa_json_for_any_config_and_its_errors(tmp_path):
    records = released_records(tmp_path / "release")[:3]
    (tmp_path / "release" / "pim_val.json").write_text(json.dumps(records))
    assert (
        build(tmp_path / "out", "partimagenet", "--qa-json", str(tmp_path / "release" / "pim_val.json")) == 0
    )
    assert set(datasets.load_dataset(str(tmp_path / "out"), "partimagenet")) == {
        "validation"
    }  # from the name
    assert build(tmp_path / "out", "paco", "--qa-json", f"test={tmp_path / 'nowhere.json'}") == 2


def test_export_then_import_gives_identical_rows(tmp_path):
    assert build(tmp_path / "ours", "toy", "--toy-num-images", "30") == 0
    out = tmp_path / "export" / "toy_qa_pairs.json"
    assert (
        cli.main(
            [
                "export-qa",
                str(tmp_path / "ours"),
                "--config",
                "toy",
                "--split",
                "validation",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())
    assert all((out.parent / r["image_path"]).is_file() for r in records)
    assert {r["question_type"] for r in records} <= {
        "identification_with_label",
        "positive_with_label",
        "negative_with_label",
        "part_to_whole",
        "whole_to_part",
    }
    assert build(tmp_path / "again", "toy", "--qa-json", f"validation={out}") == 0
    original = datasets.load_dataset(str(tmp_path / "ours"), "toy", split="validation")
    imported = datasets.load_dataset(str(tmp_path / "again"), "toy", split="validation")
    decode_off = datasets.Image(decode=False)
    original, imported = original.cast_column("image", decode_off), imported.cast_column("image", decode_off)
    assert len(original) == len(imported) == len(records)
    for a, b, record in zip(original, imported, records):
        assert b.pop("released_question_type") == record["question_type"]
        assert a.pop("released_question_type") is None
        assert a == b  # every column, the image bytes included
    assert any(r["question_type"] in ("part_to_whole", "whole_to_part") for r in records)
    bare = tmp_path / "bare" / "qa.json"
    cli.main(
        [
            "export-qa",
            str(tmp_path / "ours"),
            "--config",
            "toy",
            "--split",
            "validation",
            "--out",
            str(bare),
            "--reference-fields-only",
        ]
    )
    assert set(json.loads(bare.read_text())[0]) == {
        "image_path",
        "image_label",
        "question",
        "question_type",
        "answer_choices",
        "answer_types",
        "answer_parts",
        "segmentations",
        "object_question",
        "object_answer_choices",
        "object_answer_types",
        "object_answer_classes",
    }
    assert (
        cli.main(["export-qa", str(tmp_path / "ours"), "--config", "toy", "--out", str(bare)]) == 2
    )  # two splits


# ------------------------------------------------------------------------------------------- VLPart's Pascal-Part json

# VLPart's categories (tools/pascal_part_mat2json.py): `object:part`, with the fine-name substring as `abbr` where it
# differs; a fine part name takes the first part of its object whose name (or abbr) it contains.
VLPART_PARTS = {
    "aeroplane": ["body", "wing", "tail", "wheel"],
    "bicycle": ["wheel", "handlebar", "saddle"],
    "bird": ["beak", "head", "eye", "leg", "foot", "wing", "neck", "tail", "torso"],
    "bottle": ["body", "cap"],
    "bus": ["license plate=liplate", "headlight", "door", "mirror", "window", "wheel"],
    "car": ["license plate=liplate", "headlight", "door", "mirror", "window", "wheel"],
    "cat": ["head", "leg", "ear", "eye", "paw=pa", "neck", "nose", "tail", "torso"],
    "cow": ["head", "leg", "ear", "eye", "neck", "horn", "muzzle", "tail", "torso"],
    "dog": ["head", "leg", "ear", "eye", "paw=pa", "neck", "nose", "muzzle", "tail", "torso"],
    "horse": ["head", "leg", "ear", "eye", "neck", "muzzle", "tail", "torso"],
    "motorbike": ["wheel", "handlebar", "headlight", "saddle"],
    "person": ["hair", "head", "ear", "eye", "nose", "neck", "mouth", "arm", "hand", "leg", "foot", "torso"],
    "potted plant": ["plant", "pot"],
    "sheep": ["head", "leg", "ear", "eye", "neck", "horn", "muzzle", "tail", "torso"],
}


def vlpart_json_from_mats(mat_paths, out_json):
    """VLPart's `pascal_part_mat2json.py` procedure, re-written here: one COCO json, one annotation per matched part
    (compressed RLE, bbox, area), image ids from the file names, sizes from the part masks."""
    from pycocotools import mask as mask_util

    categories, parts_of = [], {}
    for obj, parts in VLPART_PARTS.items():
        for entry in parts:
            name, _, abbr = entry.partition("=")
            category = {"id": len(categories) + 1, "name": f"{obj}:{name}"}
            if abbr:
                category["abbr"] = f"{obj}:{abbr}"
            categories.append(category)
            parts_of.setdefault(obj, []).append((category["id"], abbr or name))
    images, annotations = [], []
    for mat_path in mat_paths:
        anno = scipy.io.loadmat(str(mat_path))["anno"][0][0]
        name = mat_path.stem
        height, width, count = 512, 512, 0
        for obj in anno[1][0]:
            obj_name = "potted plant" if str(obj[0][0]) == "pottedplant" else str(obj[0][0])
            if len(obj[3]) < 1:
                continue
            for part in obj[3][0]:
                fine, part_mask = str(part[0][0]), part[1]
                height, width = part_mask.shape
                for category_id, substring in parts_of.get(obj_name, []):
                    if substring in fine:
                        rle = mask_util.encode(np.array(part_mask[:, :, None], order="F", dtype="uint8"))[0]
                        rle["counts"] = rle["counts"].decode("utf-8")
                        ys, xs = np.where(part_mask > 0)
                        box = [
                            float(xs.min()),
                            float(ys.min()),
                            float(xs.max() - xs.min()),
                            float(ys.max() - ys.min()),
                        ]
                        annotations.append(
                            {
                                "id": len(annotations),
                                "segmentation": rle,
                                "bbox": box,
                                "category_id": category_id,
                                "image_id": int(name[:4] + name[5:]),
                                "iscrowd": 0,
                                "area": box[2] * box[3],
                            }
                        )
                        count += 1
                        break
        if count:
            images.append(
                {"id": int(name[:4] + name[5:]), "file_name": name + ".jpg", "height": height, "width": width}
            )
    out_json.write_text(json.dumps({"categories": categories, "images": images, "annotations": annotations}))


def test_vlpart_json_matches_the_mat_files_it_was_written_from(real_pascal_part_dir, tmp_path):
    mats = sorted(real_pascal_part_dir.glob("*.mat"))
    root = tmp_path / "pascal_part"
    root.mkdir()
    vlpart_json_from_mats(mats[:9], root / "train.json")
    vlpart_json_from_mats(mats[9:], root / "val.json")
    images = root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    images.mkdir(parents=True)
    for jpg in real_pascal_part_dir.glob("*.jpg"):
        shutil.copy(jpg, images)
    stats = ReadStats()
    from_json = pascal_part.read_dir(root, stats)
    assert stats.files == 2 and not stats.bad_files
    assert {i.split for i in from_json} == {"train", "validation"}
    validation = {i.image_id for i in from_json if i.split == "validation"}
    assert validation and validation <= {m.stem for m in mats[9:]}
    # the json has no instance link: per image and class, each part is the union over every instance of the class
    from_mats = {}
    for mat in mats:
        for instance in pascal_part.read_file(mat, real_pascal_part_dir / f"{mat.stem}.jpg"):
            entry = from_mats.setdefault((instance.image_id, instance.object), {})
            for part, rle in instance.parts.items():
                entry[part] = masks.union([entry[part], rle]) if part in entry else rle
    assert {(i.image_id, i.object) for i in from_json} == set(from_mats)
    for instance in from_json:
        expected = from_mats[(instance.image_id, instance.object)]
        assert sorted(instance.parts) == sorted(expected), (instance.image_id, instance.object)
        for part, rle in instance.parts.items():
            np.testing.assert_array_equal(masks.decode(rle), masks.decode(expected[part]))
        assert instance.bbox is None  # no instance link, so no box
    assert build(tmp_path / "out", "pascal_part", "--source-dir", str(root)) == 0
    built = datasets.load_dataset(str(tmp_path / "out"), "pascal_part")
    assert set(built["validation"]["image_id"]) <= {m.stem for m in mats[9:]}  # VLPart's split, kept
    assert "no object-instance link" in (tmp_path / "out" / "README.md").read_text()


# ------------------------------------------------------------------------------------------- bad records


def partimagenet_with_bad_records(root):
    """Good records (images 1 and 2) beside every kind of bad one."""
    for name in ("good_1", "good_2", "nan", "inf", "far", "sized", "twice_a", "twice_b"):
        write_image(root / "train" / f"{name}.JPEG")
    write_image(root / "train" / "resized.JPEG", width=80, height=60)  # the json says 40 x 30
    images = [
        {"id": 1, "file_name": "good_1.JPEG", "width": 40, "height": 30},
        {"id": 2, "file_name": "good_2.JPEG", "width": 40, "height": 30},
        {"id": 3, "file_name": "nan.JPEG", "width": 40, "height": 30},
        {"id": 4, "file_name": "inf.JPEG", "width": 40, "height": 30},
        {"id": 5, "file_name": "far.JPEG", "width": 40, "height": 30},
        {"id": 6, "file_name": "resized.JPEG", "width": 40, "height": 30},
        {"id": 7, "file_name": "twice_a.JPEG", "width": 40, "height": 30},
        {"id": 7, "file_name": "twice_b.JPEG", "width": 40, "height": 30},  # a duplicate id
    ]
    categories = [
        {"id": 0, "name": "Head", "supercategory": "Quadruped"},
        {"id": 1, "name": "Body", "supercategory": "Quadruped"},
        {"id": 2, "supercategory": "Quadruped"},  # no name
        {"id": 3, "name": "Tail", "supercategory": "Quadruped"},
        {"id": 4, "name": "Foot", "supercategory": "Quadruped"},
        {"id": 5, "name": "Leg", "supercategory": "Quadruped"},
    ]

    def ann(i, image_id, category_id, polygon):
        return {"id": i, "image_id": image_id, "category_id": category_id, "segmentation": [polygon]}

    annotations = [
        ann(1, 1, 0, box_polygon(0, 0, 10, 10)),
        ann(2, 1, 1, box_polygon(10, 10, 30, 20)),
        ann(3, 2, 0, box_polygon(5, 5, 15, 15)),
        ann(4, 3, 0, [0, 0, float("nan"), 0, 10, 10]),
        ann(5, 4, 0, [0, 0, float("inf"), 0, 10, 10]),
        ann(6, 5, 0, [0, 0, 1e12, 0, 10, 10]),
        ann(7, 6, 0, box_polygon(0, 0, 10, 10)),
        ann(8, 7, 0, box_polygon(0, 0, 10, 10)),
        ann(9, 2, 2, box_polygon(0, 0, 10, 10)),
        ann(10, 1, 3, box_polygon(30, 0, 40, 5)),
        ann(11, 2, 4, box_polygon(0, 25, 10, 30)),
        ann(12, 2, 5, box_polygon(0, 15, 10, 25)),
    ]
    (root / "train" / "train.json").write_text(
        json.dumps({"images": images, "categories": categories, "annotations": annotations})
    )


def test_bad_records_are_counted_and_good_ones_come_out_intact(tmp_path):
    partimagenet_with_bad_records(tmp_path)
    stats = ReadStats()
    instances = {i.image_id: i for i in partimagenet.read_dir(tmp_path / "train", stats)}
    assert set(instances) == {"1", "2"}
    assert (
        sorted(instances["1"].parts) == ["body", "head", "tail"]
        and masks.area(instances["1"].parts["body"]) == 200
    )
    assert masks.area(instances["2"].parts["head"]) == 100
    assert stats.skipped["polygons with NaN or infinite coordinates"] == 2
    assert stats.skipped["polygons far outside their image"] == 1
    assert stats.skipped["instances whose image size differs from the json (skipped)"] == 1
    assert stats.skipped["image ids listed twice (both left out)"] == 1
    assert stats.skipped["annotations of an image id listed twice"] == 1
    assert stats.skipped["categories without a name"] == 1
    assert not stats.bad_files


def test_a_build_with_bad_records_reports_them(tmp_path, capsys):
    partimagenet_with_bad_records(tmp_path / "src")
    assert build(tmp_path / "out", "partimagenet", "--source-dir", str(tmp_path / "src" / "train")) == 0
    printed = capsys.readouterr().out
    assert "polygons with NaN or infinite coordinates" in printed
    card = (tmp_path / "out" / "README.md").read_text()
    for reason in ("polygons far outside their image", "image ids listed twice", "categories without a name"):
        assert reason in card


def test_cli_refuses_empty_results_bad_outputs_and_cleans_killed_builds(tmp_path, capsys, monkeypatch):
    assert build(tmp_path / "out", "toy", "--toy-num-images", "0") == 2
    assert "toy_num_images must be positive" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    started = []
    monkeypatch.setattr(cli.Partonomy, "download_and_prepare", lambda self: started.append(1))
    assert build(tmp_path / "a_file", "toy", "--toy-num-images", "3") == 2
    assert "exists and is not a folder" in capsys.readouterr().err and not started  # before any work
    assert (
        build(tmp_path / "a_file" / "out", "toy", "--toy-num-images", "3") == 2
    )  # under a file: not writable
    assert "cannot write the dataset into --out" in capsys.readouterr().err and not started


def test_a_killed_build_leaves_nothing_the_next_one_keeps(tmp_path):
    out = tmp_path / "out"
    (out / "data" / ".toy.0123.partial" / "x").mkdir(parents=True)  # what `kill -9` during a build leaves
    (out / "data" / ".toy.4567.old").mkdir()
    assert build(out, "toy", "--toy-num-images", "5") == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == ["toy"]


def test_a_mask_of_another_size_than_its_image_is_never_silent(tmp_path):
    source = tmp_path / "core"
    records = released_records(source)
    wrong = {
        **records[0],
        "segmentations": {"wing": [rle_of_box(0, 0, 5, 5, width=41, height=30)], "spraying rig": []},
    }
    (source / "partonomy_qa_pairs.json").write_text(json.dumps([records[1], wrong]))
    assert build(tmp_path / "out", "core", "--source-dir", str(source)) == 0
    assert len(datasets.load_dataset(str(tmp_path / "out"), "core", split="test")) == 1
    bad = report(tmp_path / "out", "core")["bad_files"]
    assert len(bad) == 1 and "differs from the image's 30x40" in bad[0][1]
    assert Image.open(source / "images" / "agri_1.jpg").size == (40, 30)
