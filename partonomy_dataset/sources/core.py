"""PARTONOMY-Core reader: one json per mask, `{"counts", "size", "image_path", "is_root_concept"}`, in folders
named after the concept: `category--object` for whole-object masks and `category--object--part:part` for part
masks (e.g. `airplanes--agricultural--part:spraying_rig`). `object_names.json` beside the masks maps
`category--object` to its natural-language label ("agricultural airplane"); without an entry the object
segment is used with `_` read as a space.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .. import masks
from ..instances import (
    Instance,
    ReadStats,
    SkippedRecord,
    check_mask_size,
    image_size,
    select_instances,
    text_problem,
)
from .coco_json import find_image, load_json

SOURCE = "core"
PART_SEPARATOR = "--part:"
OBJECT_NAMES_FILE = "object_names.json"


def parse_concept(folder_name: str) -> tuple[str, str, str | None]:
    """`airplanes--agricultural--part:wing` → (`airplanes--agricultural`, `airplanes`, `wing`)."""
    name = folder_name.lower()
    object_key, _, part = name.partition(PART_SEPARATOR)
    if "--" not in object_key:
        raise ValueError(f"concept folder {folder_name!r} is not named category--object[--part:part]")
    category = object_key.split("--", 1)[0]
    return object_key, category, (part.replace("_", " ").strip() or None) if part else None


def read_object_names(path, stats: ReadStats) -> dict[str, str]:
    """`object_names.json` (`{"category--object": "natural-language name"}`) with its keys lower-cased; `{}` when
    there is none. A file that is not such a mapping is reported in `stats` and ignored (the folder names are used);
    an entry whose key or name is not a usable string is counted and left out."""
    path = Path(path)
    if not path.is_file():
        return {}
    reason = "object_names.json files that are not a name mapping (ignored)"
    try:
        names = load_json(path)
    except ValueError as error:
        stats.skip(reason, path, error)
        return {}
    if not isinstance(names, dict):
        stats.skip(reason, path, f"must map category--object to a name, got a {type(names).__name__}")
        return {}
    usable = {
        key.lower(): name
        for key, name in names.items()
        if text_problem(key, "key") is None and text_problem(name, "name") is None
    }
    if len(usable) < len(names):
        stats.skipped["object names that are not strings (ignored)"] += len(names) - len(usable)
    return usable


def _masks_dir(source_dir: Path) -> Path:
    return source_dir / "masks" if (source_dir / "masks").is_dir() else source_dir


def read_dir(source_dir, stats: ReadStats | None = None, object_names_file=None) -> list[Instance]:
    """Every mask json under the concept folders of `source_dir`, grouped into one instance per image.
    Bad files and records are counted, logged and skipped."""
    source_dir = Path(source_dir)
    stats = stats if stats is not None else ReadStats()
    masks_dir = _masks_dir(source_dir)
    folders = (
        sorted(p for p in masks_dir.iterdir() if p.is_dir() and "--" in p.name) if masks_dir.is_dir() else []
    )
    if not folders:
        raise FileNotFoundError(
            f"no PARTONOMY-Core concept folders (category--object[--part:part]) under {source_dir}"
        )
    names_path = Path(object_names_file) if object_names_file else source_dir / OBJECT_NAMES_FILE
    object_names = read_object_names(names_path, stats)

    records = defaultdict(lambda: {"parts": defaultdict(list), "object": [], "key": None})
    for folder in folders:
        object_key, category, part = parse_concept(folder.name)
        for json_path in sorted(folder.glob("*.json")):
            stats.files += 1
            try:
                data = load_json(json_path)
                rle = masks.validate({"size": data["size"], "counts": data["counts"]}, str(json_path))
                image_path = find_image(source_dir, data["image_path"])
            except SkippedRecord as error:
                stats.skip(error.reason, json_path, error)
                continue
            except (OSError, ValueError, KeyError, TypeError) as error:
                stats.bad(json_path, error)
                continue
            record = records[str(image_path)]
            if record["key"] not in (None, object_key):
                stats.bad(json_path, f"image {image_path} already belongs to {record['key']}")
                continue
            record["key"], record["category"] = object_key, category
            if part is None or data.get("is_root_concept"):
                record["object"].append(rle)
            else:
                record["parts"][part].append(rle)

    instances = []
    for image_path, record in records.items():
        if not record["parts"]:
            stats.skipped["images without part masks"] += 1
            continue
        try:
            width, height = image_size(image_path)
            part_masks = {name: masks.union(rles) for name, rles in sorted(record["parts"].items())}
            for name, rle in part_masks.items():
                check_mask_size(rle, width, height, f"{image_path} part {name}")
        except SkippedRecord as error:
            stats.skip(error.reason, image_path, error)
            continue
        except (OSError, ValueError) as error:
            stats.bad(image_path, error)
            continue
        object_key = record["key"]
        label = object_names.get(object_key) or object_key.split("--", 1)[1].replace("_", " ")
        instances.append(
            Instance(
                source=SOURCE,
                image_id=Path(image_path).stem,
                image_path=image_path,
                width=width,
                height=height,
                object=label,
                category=record["category"].replace("_", " "),
                parts=part_masks,
                object_mask=masks.union(record["object"] or list(part_masks.values())),
            )
        )
    stats.log(SOURCE)
    return select_instances(instances, stats)
