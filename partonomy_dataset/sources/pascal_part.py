"""Pascal-Part reader, in either of the two layouts its users have:

- the official per-image `.mat` annotations (Chen et al., 2014): `anno.objects[i]` holds `class`, `class_ind`, `mask`
  and `parts[j] = (part_name, mask)`. Fine part names (`lear`, `rfleg`, `wheel_2`, `bliplate` ...) map to the coarse
  93-category vocabulary used by VLPart by substring, matched against the object's own class, longest first
  (`headlight_1` is a headlight, not a head). Masks of one coarse part are unioned; objects with no mapped part are
  dropped and counted. The builder splits the images 80/20.
- VLPart's COCO json (`train.json` / `val.json`, written from the `.mat` files by VLPart's
  `tools/pascal_part_mat2json.py`, which the reference PLUM trains on): categories `object:part` (`car:license plate`),
  compressed RLE part masks, images under `VOCdevkit/VOC2010/JPEGImages/`. The json has no object-instance link, so
  the parts of one object class in one image form one instance (each part the union of its annotations), and its
  files' split is kept.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.io

from .. import masks
from ..instances import Instance, ReadStats, SkippedRecord, check_mask_size, image_size, select_instances
from ..paths import resolve_inside
from .coco_json import keep_readable_instances, load_coco

SOURCE = "pascal_part"
VLPART_SPLITS = {"train.json": "train", "val.json": "validation"}  # VLPart's file → our split

# class → [(coarse part name, substring of the fine name)]
_ANIMAL = ["head", "leg", "ear", "eye", "neck", "tail", "torso"]
PART_VOCABULARY: dict[str, list[tuple[str, str]]] = {
    "aeroplane": [(p, p) for p in ("body", "wing", "tail", "wheel")],
    "bicycle": [(p, p) for p in ("wheel", "handlebar", "saddle")],
    "bottle": [(p, p) for p in ("body", "cap")],
    "bird": [(p, p) for p in ("beak", "head", "eye", "leg", "foot", "wing", "neck", "tail", "torso")],
    "bus": [("license plate", "liplate")]
    + [(p, p) for p in ("headlight", "door", "mirror", "window", "wheel")],
    "car": [("license plate", "liplate")]
    + [(p, p) for p in ("headlight", "door", "mirror", "window", "wheel")],
    "cat": [(p, p) for p in _ANIMAL + ["nose"]] + [("paw", "pa")],
    "dog": [(p, p) for p in _ANIMAL + ["nose", "muzzle"]] + [("paw", "pa")],
    "cow": [(p, p) for p in _ANIMAL + ["horn", "muzzle"]],
    "sheep": [(p, p) for p in _ANIMAL + ["horn", "muzzle"]],
    "horse": [(p, p) for p in _ANIMAL + ["muzzle"]],
    "motorbike": [(p, p) for p in ("wheel", "handlebar", "headlight", "saddle")],
    "person": [
        (p, p)
        for p in (
            "hair",
            "head",
            "ear",
            "eye",
            "nose",
            "neck",
            "mouth",
            "arm",
            "hand",
            "leg",
            "foot",
            "torso",
        )
    ],
    "pottedplant": [(p, p) for p in ("plant", "pot")],
}

# Pascal class name → (natural-language label, superordinate category)
OBJECTS: dict[str, tuple[str, str]] = {
    "aeroplane": ("airplane", "vehicle"),
    "bicycle": ("bicycle", "vehicle"),
    "boat": ("boat", "vehicle"),
    "bus": ("bus", "vehicle"),
    "car": ("car", "vehicle"),
    "motorbike": ("motorbike", "vehicle"),
    "train": ("train", "vehicle"),
    "bird": ("bird", "animal"),
    "cat": ("cat", "animal"),
    "cow": ("cow", "animal"),
    "dog": ("dog", "animal"),
    "horse": ("horse", "animal"),
    "sheep": ("sheep", "animal"),
    "person": ("person", "person"),
    "bottle": ("bottle", "household object"),
    "chair": ("chair", "household object"),
    "diningtable": ("dining table", "household object"),
    "table": ("dining table", "household object"),
    "pottedplant": ("potted plant", "household object"),
    "sofa": ("sofa", "household object"),
    "tvmonitor": ("tv monitor", "household object"),
}


def coarse_part(object_class: str, fine_name: str) -> str | None:
    """Maps a fine Pascal-Part name to its coarse part for `object_class`, or None when it has none."""
    vocabulary = sorted(PART_VOCABULARY.get(object_class, []), key=lambda entry: -len(entry[1]))
    for coarse, substring in vocabulary:
        if substring in fine_name:
            return coarse
    return None


def _text(value) -> str:
    return str(np.asarray(value).ravel()[0])


def read_file(mat_path, image_path, stats: ReadStats | None = None) -> list[Instance]:
    """All mapped object instances of one annotation file (before one-per-class selection)."""
    stats = stats if stats is not None else ReadStats()
    try:
        anno = scipy.io.loadmat(str(mat_path))["anno"][0, 0]
        image_id = _text(anno["imname"])
        objects = anno["objects"]
    except Exception as error:  # scipy raises several types for a damaged file
        raise ValueError(f"cannot read Pascal-Part annotation {mat_path}: {error}") from None
    width, height = image_size(image_path)
    instances = []
    for i in range(objects.shape[1]):
        obj = objects[0, i]
        object_class = _text(obj["class"])
        if object_class not in OBJECTS:
            stats.skipped[f"unknown class {object_class}"] += 1
            continue
        grouped: dict[str, list[dict]] = {}
        parts = obj["parts"]
        for j in range(parts.shape[1] if parts.size else 0):
            fine = _text(parts[0, j]["part_name"])
            coarse = coarse_part(object_class, fine)
            if coarse is None:
                stats.skipped["unmapped part names"] += 1
                continue
            rle = masks.encode(np.asarray(parts[0, j]["mask"]))
            check_mask_size(rle, width, height, f"{mat_path} object {i} part {fine}")
            grouped.setdefault(coarse, []).append(rle)
        if not grouped:
            stats.skipped["objects without mapped parts"] += 1
            continue
        object_mask = masks.encode(np.asarray(obj["mask"]))
        check_mask_size(object_mask, width, height, f"{mat_path} object {i}")
        label, category = OBJECTS[object_class]
        instances.append(
            Instance(
                source=SOURCE,
                image_id=image_id,
                image_path=str(image_path),
                width=width,
                height=height,
                object=label,
                category=category,
                parts={name: masks.union(rles) for name, rles in sorted(grouped.items())},
                object_mask=object_mask,
            )
        )
    return instances


def _image_for(mat_path: Path, source_dir: Path) -> Path:
    """The image of a `.mat` file: beside it, or in the `JPEGImages/` of the source folder or of its parent (VOC's
    layout), resolved inside the folder it is found in (`SkippedRecord` for a symlink out of it)."""
    for folder in (mat_path.parent, source_dir / "JPEGImages", source_dir.parent / "JPEGImages"):
        for suffix in (".jpg", ".jpeg", ".png"):
            try:
                return resolve_inside(folder, mat_path.stem + suffix)
            except FileNotFoundError:
                continue
    return mat_path.with_suffix(".jpg")  # image_size() then names the missing file


def _class_of(category_name: str) -> str | None:
    """VLPart's object name (`potted plant`) → the Pascal class (`pottedplant`), or None for an unknown one."""
    key = category_name.split(":", 1)[0].strip().replace(" ", "")
    return key if key in OBJECTS else None


def read_vlpart_json(
    json_path, source_dir, split: str | None, stats: ReadStats | None = None
) -> list[Instance]:
    """The instances of one VLPart json: per image and object class, each part the union of its annotations. A bad
    record is counted in `stats` and skipped; without `stats`, it is an error naming it."""
    stats = stats if stats is not None else ReadStats(strict=True)
    coco = load_coco(json_path, source_dir, stats)
    grouped = defaultdict(lambda: defaultdict(list))  # (image id, class) → part → rles
    for _, image, category, rle in coco.masked_annotations(stats):
        object_class = _class_of(category["name"])
        if object_class is None or ":" not in category["name"]:
            stats.skipped["categories that are not a known object:part"] += 1
            continue
        grouped[(image["id"], object_class)][category["name"].split(":", 1)[1].strip()].append(rle)
    instances = []
    for (image_id, object_class), parts in sorted(grouped.items(), key=lambda item: str(item[0])):
        image = coco.images[image_id]
        part_masks = {name: masks.union(rles) for name, rles in sorted(parts.items())}
        label, category = OBJECTS[object_class]
        instances.append(
            Instance(
                source=SOURCE,
                image_id=Path(image["file_name"]).stem,
                image_path=image["path"],
                width=image["width"],
                height=image["height"],
                object=label,
                category=category,
                parts=part_masks,
                object_mask=masks.union(list(part_masks.values())),
                split=split,
            )
        )
    return instances


def _vlpart_files(source_dir: Path) -> list[Path]:
    return [
        folder / name
        for folder in (source_dir, source_dir / "pascal_part")
        for name in VLPART_SPLITS
        if (folder / name).is_file()
    ]


def read_dir(source_dir, stats: ReadStats | None = None) -> list[Instance]:
    """Every `.mat` under `source_dir` (images beside them or in `JPEGImages/`), or else VLPart's `train.json` /
    `val.json` (images found as `find_image` says); one instance per class per image. A bad file or record is
    counted in `stats`, logged and skipped."""
    source_dir = Path(source_dir)
    stats = stats if stats is not None else ReadStats()
    mat_files = sorted(source_dir.rglob("*.mat"))
    if not mat_files:
        json_files = _vlpart_files(source_dir)
        if not json_files:
            raise FileNotFoundError(
                f"no Pascal-Part .mat files and no VLPart train.json / val.json under {source_dir}"
            )
        candidates = []
        for json_path in json_files:
            stats.files += 1
            try:
                candidates.extend(
                    read_vlpart_json(json_path, source_dir, VLPART_SPLITS[json_path.name], stats)
                )
            except (OSError, ValueError, KeyError, TypeError) as error:
                stats.bad(json_path, error)
        present = keep_readable_instances(candidates, stats)
        stats.log(SOURCE)
        return select_instances(present, stats)
    candidates = []
    for mat_path in mat_files:
        stats.files += 1
        try:
            candidates.extend(read_file(mat_path, _image_for(mat_path, source_dir), stats))
        except SkippedRecord as error:
            stats.skip(error.reason, mat_path, error)
        except (OSError, ValueError) as error:
            stats.bad(mat_path, error)
    stats.log(SOURCE)
    return select_instances(candidates, stats)
