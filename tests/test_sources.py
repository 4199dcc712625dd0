"""Source readers: the real Pascal-Part files, and small files written in the PACO, PartImageNet and
PARTONOMY-Core formats; plus the toy generator."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from partonomy_dataset import masks
from partonomy_dataset.instances import ReadStats
from partonomy_dataset.sources import core, paco, partimagenet, pascal_part, toy


# ------------------------------------------------------------------------------------------- Pascal-Part
def test_fine_names_map_to_coarse_parts_of_their_own_class():
    assert pascal_part.coarse_part("car", "headlight_1") == "headlight"  # not "head"
    assert pascal_part.coarse_part("cat", "lfpa") == "paw"
    assert pascal_part.coarse_part("bus", "bliplate") == "license plate"
    assert pascal_part.coarse_part("person", "ruleg") == "leg"
    assert pascal_part.coarse_part("person", "lebrow") is None
    assert pascal_part.coarse_part("car", "lfpa") is None
    assert pascal_part.coarse_part("chair", "leg") is None


def test_real_pascal_part_files(real_pascal_part_dir):
    stats = ReadStats()
    instances = pascal_part.read_dir(real_pascal_part_dir, stats)
    assert stats.files == 12 and not stats.bad_files
    assert (
        stats.skipped["objects without mapped parts"] == 7
    )  # chairs, table, tv monitor, boat, a bare person
    assert stats.skipped["unmapped part names"] == 11  # eyebrows, car sides
    by_key = {(i.image_id, i.object): i for i in instances}
    assert len(by_key) == len(instances) == 13  # one instance per class per image
    dog = by_key[("2008_003497", "dog")]  # two dogs: the one with 10 coarse parts wins over 6, and gets a box
    assert sorted(dog.parts) == [
        "ear",
        "eye",
        "head",
        "leg",
        "muzzle",
        "neck",
        "nose",
        "paw",
        "tail",
        "torso",
    ]
    assert dog.bbox is not None and dog.bbox[2] > 0
    assert by_key[("2008_005643", "dog")].bbox is None
    car = by_key[("2008_000939", "car")]
    assert sorted(car.parts) == ["door", "license plate", "wheel", "window"]
    for instance in instances:
        for rle in instance.parts.values():
            assert rle["size"] == [instance.height, instance.width]
            assert isinstance(rle["counts"], str)
    # wheel_1 and wheel_2 are unioned into one "wheel" mask
    import scipy.io

    anno = scipy.io.loadmat(str(real_pascal_part_dir / "2008_000939.mat"))["anno"][0, 0]
    car_parts = anno["objects"][0, 1]["parts"]
    wheels = [
        np.asarray(car_parts[0, j]["mask"])
        for j in range(car_parts.shape[1])
        if str(car_parts[0, j]["part_name"][0]).startswith("wheel")
    ]
    assert len(wheels) == 2
    np.testing.assert_array_equal(masks.decode(car.parts["wheel"]), np.logical_or(*wheels))


def test_pascal_part_bad_files_are_counted_and_skipped(real_pascal_part_dir, tmp_path):
    for name in ("2008_000939", "2008_005643"):
        shutil.copy(real_pascal_part_dir / f"{name}.mat", tmp_path)
        shutil.copy(real_pascal_part_dir / f"{name}.jpg", tmp_path)
    (tmp_path / "2010_999999.mat").write_bytes(b"not a mat file")
    shutil.copy(real_pascal_part_dir / "2008_006462.mat", tmp_path)  # its image is missing
    stats = ReadStats()
    instances = pascal_part.read_dir(tmp_path, stats)
    assert {i.image_id for i in instances} == {"2008_000939", "2008_005643"}
    bad = dict(stats.bad_files)
    assert "cannot read Pascal-Part annotation" in bad[str(tmp_path / "2010_999999.mat")]
    assert "image not found" in bad[str(tmp_path / "2008_006462.mat")]
    with pytest.raises(ValueError, match="cannot read Pascal-Part annotation .*2010_999999.mat"):
        pascal_part.read_file(tmp_path / "2010_999999.mat", tmp_path / "2008_000939.jpg")


def test_pascal_part_mask_size_must_match_image(real_pascal_part_dir, tmp_path):
    Image.open(real_pascal_part_dir / "2008_000939.jpg").resize((100, 80)).save(tmp_path / "small.jpg")
    with pytest.raises(
        ValueError,
        match=r"2008_000939.mat object 0 part .*: mask size 375x500 differs from the image's 80x100",
    ):
        pascal_part.read_file(real_pascal_part_dir / "2008_000939.mat", tmp_path / "small.jpg")


def test_empty_source_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Pascal-Part .mat files"):
        pascal_part.read_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no paco annotation json"):
        paco.read_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no PARTONOMY-Core concept folders"):
        core.read_dir(tmp_path)


# ------------------------------------------------------------------------------------------- helpers
def write_image(path, width=40, height=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def box_polygon(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rle_of_box(x0, y0, x1, y1, width=40, height=30):
    m = np.zeros((height, width), np.uint8)
    m[y0:y1, x0:x1] = 1
    return masks.encode(m)


def uncompressed_counts(mask):
    """Run lengths of a mask in column-major order, starting with background (uncompressed COCO RLE)."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size])))
    return ([0] if flat[0] else []) + runs.tolist()


# ------------------------------------------------------------------------------------------- PACO
def paco_json(tmp_path):
    write_image(tmp_path / "images" / "train2017" / "000001.jpg")
    write_image(tmp_path / "images" / "train2017" / "000002.jpg")
    lid = np.zeros((30, 40), np.uint8)
    lid[2:10, 2:10] = 1
    runs = uncompressed_counts(lid)
    return {
        "images": [
            {"id": 1, "file_name": "train2017/000001.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "train2017/000002.jpg", "width": 40, "height": 30},
        ],
        "categories": [
            {"id": 1, "name": "car_(automobile)", "supercategory": "vehicle"},
            {"id": 2, "name": "car_(automobile):wheel"},
            {"id": 3, "name": "car_(automobile):side_mirror"},
            {"id": 4, "name": "trash_can"},
            {"id": 5, "name": "trash_can:lid"},
        ],
        "part_categories": [
            {"id": 1, "name": "wheel"},
            {"id": 2, "name": "side_mirror"},
            {"id": 3, "name": "lid"},
        ],
        "annotations": [
            # image 1: two cars; car 10 has two parts (two wheels + a mirror), car 11 one wheel
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [box_polygon(0, 0, 30, 20)]},
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": [box_polygon(30, 20, 40, 30)]},
            {
                "id": 12,
                "image_id": 1,
                "category_id": 2,
                "obj_ann_id": 10,
                "segmentation": [box_polygon(0, 15, 5, 20)],
            },
            {
                "id": 13,
                "image_id": 1,
                "category_id": 2,
                "obj_ann_id": 10,
                "segmentation": [box_polygon(20, 15, 25, 20)],
            },
            {
                "id": 14,
                "image_id": 1,
                "category_id": 3,
                "obj_ann_id": 10,
                "segmentation": [box_polygon(10, 2, 12, 4), [1, 1, 2, 2]],
            },
            {
                "id": 15,
                "image_id": 1,
                "category_id": 2,
                "obj_ann_id": 11,
                "segmentation": [box_polygon(32, 25, 36, 30)],
            },
            # image 2: a trash can with an RLE lid (uncompressed counts), and an orphan part
            {"id": 20, "image_id": 2, "category_id": 4, "segmentation": rle_of_box(0, 0, 20, 20)},
            {
                "id": 21,
                "image_id": 2,
                "category_id": 5,
                "obj_ann_id": 20,
                "segmentation": {"size": [30, 40], "counts": runs},
            },
            {
                "id": 22,
                "image_id": 2,
                "category_id": 5,
                "obj_ann_id": 999,
                "segmentation": [box_polygon(0, 0, 3, 3)],
            },
        ],
    }


def test_paco_reader(tmp_path):
    (tmp_path / "paco_lvis_v1_train.json").write_text(json.dumps(paco_json(tmp_path)))
    stats = ReadStats()
    instances = {i.image_id: i for i in paco.read_dir(tmp_path, stats)}
    car = instances["1"]
    assert car.object == "car" and car.category == "vehicle"
    assert sorted(car.parts) == ["side mirror", "wheel"]  # `_(…)` stripped, `_` read as a space
    assert masks.area(car.parts["wheel"]) == 2 * 5 * 5  # two wheels unioned
    assert car.bbox == [0.0, 0.0, 30.0, 20.0]  # two cars in the image: the chosen one is boxed
    can = instances["2"]
    assert can.object == "trash can" and can.category == "common object" and can.bbox is None
    assert masks.area(can.parts["lid"]) == 8 * 8
    assert stats.skipped["degenerate polygons (<= 4 coordinates)"] == 1
    assert stats.skipped["parts whose object annotation is missing"] == 1


def test_paco_corrupt_json_and_missing_images(tmp_path):
    data = paco_json(tmp_path)
    (tmp_path / "images" / "train2017" / "000002.jpg").unlink()
    (tmp_path / "good.json").write_text(json.dumps(data))
    (tmp_path / "broken.json").write_text("{not json")
    stats = ReadStats()
    instances = paco.read_dir(tmp_path, stats)
    assert [i.image_id for i in instances] == ["1"]
    assert stats.skipped["instances whose image is missing"] == 1
    assert "corrupt json" in dict(stats.bad_files)[str(tmp_path / "broken.json")]
    with pytest.raises(ValueError, match="corrupt json in .*broken.json"):
        paco.read_file(tmp_path / "broken.json")


def test_paco_mask_size_mismatch_names_the_annotation(tmp_path):
    data = paco_json(tmp_path)
    data["annotations"][6]["segmentation"] = rle_of_box(0, 0, 5, 5, width=41)
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 20: mask size"):
        paco.read_file(tmp_path / "a.json")


# ------------------------------------------------------------------------------------------- PartImageNet
def test_partimagenet_reader(tmp_path):
    write_image(tmp_path / "train" / "n01440764" / "n01440764_1.JPEG")
    data = {
        "images": [{"id": 7, "file_name": "n01440764/n01440764_1.JPEG", "width": 40, "height": 30}],
        "categories": [
            {"id": 0, "name": "Head", "supercategory": "Quadruped"},
            {"id": 1, "name": "Body", "supercategory": "Quadruped"},
            {"id": 2, "name": "Tier", "supercategory": "Car"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 0,
                "segmentation": [box_polygon(0, 0, 10, 10)],
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 1,
                "segmentation": [box_polygon(10, 10, 30, 20), [5, 5, 6, 6]],
            },
            {"id": 3, "image_id": 7, "category_id": 1, "segmentation": [[1.0, 2.0]]},  # degenerate only
        ],
    }
    (tmp_path / "train" / "train.json").write_text(json.dumps(data))
    stats = ReadStats()
    (quadruped,) = partimagenet.read_dir(tmp_path / "train", stats)
    assert quadruped.object == "quadruped" and quadruped.category == "animal"
    assert sorted(quadruped.parts) == ["body", "head"]
    assert masks.area(quadruped.object_mask) == 100 + 200
    assert stats.skipped["degenerate polygons (<= 4 coordinates)"] == 2
    assert partimagenet.part_name({"name": "Tier", "supercategory": "Car"}) == ("car", "tire")
    assert partimagenet.part_name({"name": "Quadruped Head", "supercategory": "Quadruped"}) == (
        "quadruped",
        "head",
    )


# ------------------------------------------------------------------------------------------- Core
def write_core(root):
    write_image(root / "images" / "agri_1.jpg")
    write_image(root / "images" / "knife_1.jpg")
    records = {
        "airplanes--agricultural": [("agri_1", (0, 0, 40, 30), True)],
        "airplanes--agricultural--part:wing": [("agri_1", (0, 10, 40, 15), False)],
        "airplanes--agricultural--part:spraying_rig": [("agri_1", (5, 20, 35, 25), False)],
        "kitchen--chef_knife--part:blade": [("knife_1", (0, 0, 30, 5), False)],
        "kitchen--chef_knife--part:handle": [("knife_1", (30, 0, 40, 5), False)],
    }
    for folder, items in records.items():
        (root / "masks" / folder).mkdir(parents=True)
        for k, (image, box, is_root) in enumerate(items):
            rle = rle_of_box(*box)
            record = {
                "counts": rle["counts"],
                "size": rle["size"],
                "image_path": f"images/{image}.jpg",
                "is_root_concept": is_root,
            }
            (root / "masks" / folder / f"{image}_{k}.json").write_text(json.dumps(record))
    (root / "object_names.json").write_text(json.dumps({"airplanes--agricultural": "agricultural airplane"}))


def test_core_reader(tmp_path):
    write_core(tmp_path)
    (tmp_path / "masks" / "kitchen--chef_knife--part:handle" / "broken.json").write_text("[")
    stats = ReadStats()
    instances = {i.object: i for i in core.read_dir(tmp_path, stats)}
    plane = instances["agricultural airplane"]
    assert plane.category == "airplanes" and sorted(plane.parts) == ["spraying rig", "wing"]
    assert masks.area(plane.object_mask) == 40 * 30  # the root-concept mask, not the union of parts
    knife = instances["chef knife"]  # no name in object_names.json: the folder's object segment
    assert knife.category == "kitchen" and masks.area(knife.object_mask) == 5 * 40
    assert len(stats.bad_files) == 1 and "corrupt json" in stats.bad_files[0][1]
    assert core.parse_concept("Airplanes--Agricultural--part:spraying_rig") == (
        "airplanes--agricultural",
        "airplanes",
        "spraying rig",
    )


# ------------------------------------------------------------------------------------------- toy
def test_toy_vocabulary_is_rich_enough():
    categories = {c for c, _ in toy.OBJECTS.values()}
    parts = [p for _, object_parts in toy.OBJECTS.values() for p, _ in object_parts]
    assert len(toy.OBJECTS) >= 12 and len(categories) >= 4 and len(set(parts)) >= 30
    shared = {p for p in set(parts) if parts.count(p) >= 3}
    assert {"window", "wheel", "door"} <= shared


def test_toy_is_deterministic_and_masks_are_exact(tmp_path):
    first = toy.generate(tmp_path / "a", 20, seed=3)
    again = toy.generate(tmp_path / "b", 20, seed=3)
    other = toy.generate(tmp_path / "c", 20, seed=4)
    for x, y in zip(first, again):
        assert x.parts == y.parts
        assert (tmp_path / "a" / f"{x.image_id}.jpg").read_bytes() == (
            tmp_path / "b" / f"{y.image_id}.jpg"
        ).read_bytes()
    assert any(x.parts != z.parts for x, z in zip(first, other))
    for instance in first:
        dense = [masks.decode(r) for r in instance.parts.values()]
        assert all(m.sum() >= toy.MIN_PART_PIXELS for m in dense)
        assert np.sum(dense, axis=0).max() == 1  # each pixel belongs to the topmost part only
        assert Image.open(instance.image_path).size == (instance.width, instance.height)


def test_toy_parts_are_told_apart_by_shape_not_colour():
    """The same part gets different colours in different images."""
    colours = []
    for seed in range(6):
        image, part_masks = toy.draw_object("house", np.random.default_rng(seed), present=["wall", "roof"])
        colours.append(image[part_masks["roof"]].mean(axis=0))
    assert np.std(colours, axis=0).max() > 30


def test_toy_instances_differ_in_what_they_show():
    """Parts are absent at random (with what is drawn on them), never below what makes the object recognisable; the
    masks are exactly the parts drawn."""
    for name in ("car", "house", "lighthouse", "cat"):
        shown = [
            frozenset(toy.draw(i * len(toy.OBJECTS) + sorted(toy.OBJECTS).index(name))[2]) for i in range(40)
        ]
        assert len(set(shown)) >= 8, name  # many different visible-part sets per object
        for parts in shown:
            assert parts & set(toy.LARGE_PARTS[name]) and len(parts) >= toy.min_present_parts(name)
            assert all(toy.DRAWN_ON[p] in parts for p in parts if p in toy.DRAWN_ON)
    image, masks = toy.draw_object("house", np.random.default_rng(0), present=["wall", "door"])
    assert set(masks) == {"wall", "door"}
