"""Shared pieces of the COCO-style json readers (PACO is LVIS-style, PartImageNet is COCO)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import masks
from ..instances import Instance, ReadStats, select_instances


def load_json(path) -> dict:
    """Reads a json file; a clear error naming the file when it is missing or corrupt."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt json in {path}: {error}") from None


def load_coco(json_path, source_dir=None) -> tuple[dict, dict, Path]:
    """A COCO-style file: its data, its images by id, and the folder its image paths are relative to."""
    source_dir = Path(source_dir) if source_dir is not None else Path(json_path).parent
    data = load_json(json_path)
    require_keys(data, ("images", "annotations", "categories"), json_path)
    return data, {image["id"]: image for image in data["images"]}, source_dir


def require_keys(data: dict, keys, path):
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO-style annotation file: missing {missing}")


def segmentation_to_rle(segmentation, height: int, width: int, stats: ReadStats, what: str) -> dict | None:
    """COCO segmentation (polygons, compressed or uncompressed RLE) → RLE; None when nothing usable is left.

    Polygons with at most 4 coordinates (fewer than 3 points) are skipped and counted.
    """
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = masks.from_uncompressed(rle)
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"{what}: mask size {rle['size']} differs from the image's {[height, width]}")
        return masks.normalise(rle)
    polygons = []
    for polygon in segmentation or []:
        if len(polygon) <= 4:
            stats.skipped["degenerate polygons (<= 4 coordinates)"] += 1
            continue
        polygons.append([float(v) for v in polygon])
    if not polygons:
        return None
    return masks.from_polygons(polygons, height, width)


def find_image(source_dir: Path, file_name: str) -> Path:
    """The image named by a json record: relative to the source dir, its `images/` folder, or by basename."""
    name = Path(file_name)
    for candidate in (
        source_dir / name,
        source_dir / "images" / name,
        source_dir / "images" / name.name,
        source_dir / name.name,
    ):
        if candidate.exists():
            return candidate
    return source_dir / name


def read_json_dir(source_dir, source, read_file_fn, stats: ReadStats | None = None) -> list[Instance]:
    """Every json under `source_dir` read with `read_file_fn`; one instance per object class per image. Bad files
    are counted, logged and skipped; instances whose image is missing on disk are skipped and counted."""
    source_dir = Path(source_dir)
    stats = stats if stats is not None else ReadStats()
    json_files = sorted(p for p in source_dir.rglob("*.json"))
    if not json_files:
        raise FileNotFoundError(f"no {source} annotation json under {source_dir}")
    candidates = []
    for json_path in json_files:
        stats.files += 1
        try:
            candidates.extend(read_file_fn(json_path, source_dir, stats))
        except (OSError, ValueError, KeyError, TypeError) as error:
            stats.bad(json_path, error)
    present = []
    for instance in candidates:
        if Path(instance.image_path).exists():
            present.append(instance)
        else:
            stats.skipped["instances whose image is missing"] += 1
    stats.log(source)
    return select_instances(present)
