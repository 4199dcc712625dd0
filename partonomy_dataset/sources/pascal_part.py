"""Pascal-Part reader: the official per-image `.mat` annotations (Chen et al., 2014).

`anno.objects[i]` holds `class`, `class_ind`, `mask` and `parts[j] = (part_name, mask)`. Fine part names
(`lear`, `rfleg`, `wheel_2`, `bliplate` ...) map to the coarse 93-category vocabulary used by VLPart by
substring, matched against the object's own class, longest first (`headlight_1` is a headlight, not a head).
Masks of one coarse part are unioned; objects with no mapped part are dropped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .. import masks
from ..instances import Instance, ReadStats, check_mask_size, image_size, select_instances

SOURCE = "pascal_part"

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
    for folder in (mat_path.parent, source_dir / "JPEGImages", source_dir.parent / "JPEGImages"):
        for suffix in (".jpg", ".jpeg", ".png"):
            candidate = folder / (mat_path.stem + suffix)
            if candidate.exists():
                return candidate
    return mat_path.with_suffix(".jpg")  # image_size() then names the missing file


def read_dir(source_dir, stats: ReadStats | None = None) -> list[Instance]:
    """Every `.mat` under `source_dir` (images beside them or in `JPEGImages/`), one instance per class per
    image. A bad file is counted in `stats`, logged and skipped."""
    source_dir = Path(source_dir)
    stats = stats if stats is not None else ReadStats()
    mat_files = sorted(source_dir.rglob("*.mat"))
    if not mat_files:
        raise FileNotFoundError(f"no Pascal-Part .mat files under {source_dir}")
    candidates = []
    for mat_path in mat_files:
        stats.files += 1
        try:
            candidates.extend(read_file(mat_path, _image_for(mat_path, source_dir), stats))
        except (OSError, ValueError) as error:
            stats.bad(mat_path, error)
    stats.log(SOURCE)
    return select_instances(candidates)
