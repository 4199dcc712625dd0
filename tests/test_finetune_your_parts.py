"""docs/finetune-your-parts.md, walked as a researcher with their own part annotations walks it: a small COCO-style
part json in PACO's layout, with category names of its own (`drone:propeller` ...), RLE and polygon masks and images
beside it, is made here; then every `walkthrough` block of the page runs, in order, in that folder, offline, and the
evaluation's results.json is checked. The page's non-walkthrough training command (the real run's settings) is parsed by
the trainer's own argument parser, so its flags cannot drift either."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partonomy_dataset import masks
from partonomy_dataset.builder import DESCRIPTIONS, PartonomyConfig, read_source
from partonomy_dataset.sources import toy

from .walkthrough import ROOT, walk

PAGE = ROOT / "docs" / "finetune-your-parts.md"
SOURCE_FOLDER = "my-parts"  # the folder the page's commands read: annotations.json and images/

# Toy drawings relabelled with names the toy never uses: object -> (its new name, supercategory, part renames).
DRONE_PARTS = {
    "wheel": "propeller",
    "window": "camera",
    "headlight": "status light",
    "door": "battery hatch",
    "mirror": "antenna",
    "license plate": "gimbal",
    "bumper": "landing gear",
}
RELABEL = {
    "car": ("drone", "aircraft", DRONE_PARTS),
    "truck": (
        "cargo drone",
        "aircraft",
        {**DRONE_PARTS, "cargo box": "payload bay", "cab": "flight controller"},
    ),
    "fish": ("glider", "aircraft", {"fin": "rudder", "eye": "cockpit", "tail": "elevator"}),
    "lamp": ("microphone stand", "studio gear", {"shade": "microphone", "pole": "boom"}),
    "chair": ("stool", "studio gear", {"seat": "cushion"}),
    "table": ("mixing desk", "studio gear", {"tabletop": "fader panel"}),
}


def _polygon_of_box(mask: np.ndarray) -> list[list[float]]:
    """A COCO polygon (one ring, x y pairs) around the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (`iscrowd` style): run lengths in column-major order, starting with a background run."""
    flat = mask.flatten(order="F").astype(np.uint8)
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def make_sample(folder: Path, images_per_object: int = 6, size: int = 96, seed: int = 7) -> dict:
    """Writes `folder/annotations.json` (PACO's layout: `object` and `object:part` categories, parts linked by
    `obj_ann_id`) and `folder/images/*.png`: toy drawings under `RELABEL`'s names. Object masks are polygons, part
    masks compressed RLE, except every third image's, which are uncompressed RLE. Returns the json."""
    (folder / "images").mkdir(parents=True)
    images, annotations, categories = [], [], {}

    def category_id(name: str, supercategory: str) -> int:
        if name not in categories:
            categories[name] = {"id": len(categories) + 1, "name": name, "supercategory": supercategory}
        return categories[name]["id"]

    for object_index, (toy_name, (name, supercategory, renames)) in enumerate(sorted(RELABEL.items())):
        for k in range(images_per_object):
            rng = np.random.default_rng([seed, object_index, k])
            pixels, part_masks = toy.draw_object(toy_name, rng, size)
            image_id = len(images) + 1
            file_name = f"{name.replace(' ', '_')}_{k:03d}.png"
            Image.fromarray(pixels).save(folder / "images" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            object_mask = np.logical_or.reduce(list(part_masks.values()))
            object_id = len(annotations) + 1
            annotations.append(
                {
                    "id": object_id,
                    "image_id": image_id,
                    "category_id": category_id(name, supercategory),
                    "segmentation": _polygon_of_box(object_mask),
                }
            )
            for part, mask in sorted(part_masks.items()):
                rle = _uncompressed_rle(mask) if image_id % 3 == 0 else masks.encode(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_id(f"{name}:{renames.get(part, part)}", supercategory),
                        "obj_ann_id": object_id,
                        "segmentation": rle,
                    }
                )
    data = {"images": images, "annotations": annotations, "categories": list(categories.values())}
    (folder / "annotations.json").write_text(json.dumps(data))
    return data


def test_the_sample_reads_as_the_custom_config_with_its_own_names(tmp_path):
    make_sample(tmp_path / SOURCE_FOLDER)
    config = PartonomyConfig(name="custom", source_dir=str(tmp_path / SOURCE_FOLDER))
    instances, stats = read_source(config, tmp_path / "unused")
    assert not stats.bad_files and not stats.skipped
    assert {i.source for i in instances} == {"custom"}
    assert {i.object for i in instances} == {name for name, _, _ in RELABEL.values()}
    drones = [i for i in instances if i.object == "drone"]
    assert drones and all(i.category == "aircraft" for i in drones)
    assert "propeller" in set().union(*(i.parts for i in drones))
    # every part mask is the drawn one, whichever way it was written (compressed or uncompressed RLE)
    data = json.loads((tmp_path / SOURCE_FOLDER / "annotations.json").read_text())
    written = {
        (a["image_id"], a["category_id"]): a["segmentation"] for a in data["annotations"] if "obj_ann_id" in a
    }
    names = {c["id"]: c["name"] for c in data["categories"]}
    uncompressed = 0
    for (image_id, category_id), segmentation in written.items():
        instance = next(i for i in instances if i.image_id == str(image_id))
        part = names[category_id].split(":", 1)[1]
        if isinstance(segmentation["counts"], list):
            uncompressed += 1
            runs = np.repeat(np.arange(len(segmentation["counts"])) % 2, segmentation["counts"]).astype(bool)
            expected = runs.reshape(segmentation["size"][::-1]).T
        else:
            expected = masks.decode(segmentation)
        np.testing.assert_array_equal(masks.decode(instance.parts[part]), expected)
    assert uncompressed > 0


def test_the_real_run_command_on_the_page_parses():
    from plum_training.arguments import parse_args

    commands = [
        code
        for code in re.findall(r"^```bash\n(.*?)^```", PAGE.read_text(), re.S | re.M)
        if "train_accelerate.py" in code
    ]
    assert len(commands) == 1, (
        "the page's one real-run training command (the walkthrough's is run by the test below)"
    )
    words = shlex.split(commands[0].replace("\\\n", " "))
    model, data, train = parse_args(words[words.index("train_accelerate.py") + 1 :])
    assert data.configs == ["custom"] and model.trust_remote_code and train.num_train_epochs > 0


@pytest.mark.slow
def test_walk_the_page_on_a_sample_of_your_own_parts(tmp_path):
    make_sample(tmp_path / SOURCE_FOLDER)
    walk(PAGE, tmp_path)
    results = json.loads((tmp_path / "eval-my-parts" / "results.json").read_text())
    model_row = next(name for name in results if name.startswith("my-parts/checkpoint-"))
    assert {model_row, f"{model_row}, blind", "random", "oracle-text", "whole-object"} <= set(results)
    scores = results[model_row]
    assert scores["skipped"] == 0 and scores["questions"] > 0
    assert set(scores["text"]) == {"identification", "intersection", "difference", "part2whole", "whole2part"}
    for value in (scores["overall"]["micro_giou"], scores["overall"]["macro_giou"]):
        assert 0.0 <= value <= 1.0
    card = (tmp_path / "my-partonomy" / "README.md").read_text()
    assert f"- `custom`: {DESCRIPTIONS['custom']}" in card
    # the questions are about the sample's own objects and parts
    built = json.loads((tmp_path / "my-partonomy" / "data" / "custom" / "partonomy_build.json").read_text())
    assert set(built["ontology"]["objects"]) == {name for name, _, _ in RELABEL.values()}
    assert "propeller" in built["ontology"]["objects"]["drone"]["parts"]
