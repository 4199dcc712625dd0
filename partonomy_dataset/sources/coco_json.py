"""Shared pieces of the COCO-style json readers (PACO is LVIS-style, PartImageNet and VLPart's Pascal-Part are COCO).

Every record is checked before it reaches pycocotools, and a bad one is counted and skipped, never allowed to take the
file down: polygons with NaN / infinite / far-out coordinates, malformed RLEs, images listed twice under one id,
categories without a name, and images whose real size differs from the json's `width` / `height` (skipped, since
their masks were drawn for the wrong size).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import masks
from ..instances import Instance, ReadStats, image_size, select_instances

logger = logging.getLogger(__name__)

# A polygon coordinate may lie a little outside its image (pycocotools clips it), not anywhere.
MAX_OUTSIDE = 1.0  # in image sizes beyond each border


def load_json(path) -> dict:
    """Reads a json file; a clear error naming the file when it is missing or corrupt."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt json in {path}: {error}") from None


def require_keys(data: dict, keys, path):
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO-style annotation file: missing {missing}")


@dataclass
class CocoFile:
    """A COCO-style file, checked: its images by id (ids listed twice left out), its named categories by id, and
    the folder its image paths are relative to."""

    path: Path
    data: dict
    images: dict
    categories: dict
    source_dir: Path
    ambiguous_ids: set = field(default_factory=set)

    def image_of(self, ann: dict, stats: ReadStats) -> dict | None:
        """The image of an annotation; None (counted) for an unknown or ambiguous image id."""
        image_id = ann.get("image_id")
        if image_id in self.ambiguous_ids:
            stats.skipped["annotations of an image id listed twice"] += 1
            return None
        image = self.images.get(image_id)
        if image is None:
            stats.skipped["annotations with unknown image or category"] += 1
        return image

    def masked_annotations(self, stats: ReadStats):
        """`(annotation, image, category, rle)` for every annotation with a known image and a named category and a
        usable mask; every other one is counted in `stats` with its reason."""
        for ann in self.data["annotations"]:
            image = self.image_of(ann, stats)
            if image is None:
                continue
            category = self.categories.get(ann.get("category_id"))
            if category is None:
                stats.skipped["annotations with unknown image or category"] += 1
                continue
            height, width = image_shape(image, str(self.path))
            what = f"{self.path} annotation {ann.get('id')}"
            rle = segmentation_to_rle(ann.get("segmentation"), height, width, stats, what)
            if rle is None:
                stats.skipped["annotations without a usable mask"] += 1
                continue
            yield ann, image, category, rle


def load_coco(json_path, source_dir=None, stats: ReadStats | None = None) -> CocoFile:
    """A COCO-style file with its images and categories checked (see `CocoFile`)."""
    stats = stats if stats is not None else ReadStats()
    source_dir = Path(source_dir) if source_dir is not None else Path(json_path).parent
    data = load_json(json_path)
    require_keys(data, ("images", "annotations", "categories"), json_path)
    images, seen = {}, {}
    for image in data["images"]:
        seen[image.get("id")] = seen.get(image.get("id"), 0) + 1
        images[image.get("id")] = image
    ambiguous = {image_id for image_id, count in seen.items() if count > 1}
    for image_id in ambiguous:
        del images[image_id]
        stats.skipped["image ids listed twice (both left out)"] += 1
        logger.warning(
            "%s: image id %s is listed %d times; its annotations are left out",
            json_path,
            image_id,
            seen[image_id],
        )
    categories = {}
    for category in data["categories"]:
        if not isinstance(category.get("name"), str) or not category["name"].strip():
            stats.skipped["categories without a name"] += 1
            logger.warning(
                "%s: category %s has no name; its annotations are left out", json_path, category.get("id")
            )
            continue
        categories[category["id"]] = category
    return CocoFile(Path(json_path), data, images, categories, source_dir, ambiguous)


def _polygon_problem(polygon, height: int, width: int) -> str | None:
    """Why a polygon cannot be given to pycocotools, or None."""
    try:
        values = [float(v) for v in polygon]
    except (TypeError, ValueError):
        return "polygons with non-numeric coordinates"
    if not all(math.isfinite(v) for v in values):
        return "polygons with NaN or infinite coordinates"
    if len(values) % 2:
        return "polygons with an odd number of coordinates"
    xs, ys = values[0::2], values[1::2]
    if (
        min(xs) < -MAX_OUTSIDE * width
        or max(xs) > (1 + MAX_OUTSIDE) * width
        or min(ys) < -MAX_OUTSIDE * height
        or max(ys) > (1 + MAX_OUTSIDE) * height
    ):
        return "polygons far outside their image"
    return None


def segmentation_to_rle(segmentation, height: int, width: int, stats: ReadStats, what: str) -> dict | None:
    """COCO segmentation (polygons, compressed or uncompressed RLE) → RLE; None when nothing usable is left.

    Polygons with at most 4 coordinates (fewer than 3 points) are skipped and counted; so are polygons with NaN,
    infinite, non-numeric or far-out coordinates (which would make pycocotools run out of memory or crash). An RLE of
    another size than the image is an error naming the annotation; a malformed one is skipped and counted.
    """
    if isinstance(segmentation, dict):
        rle = segmentation
        if list(rle.get("size", [])) != [height, width]:
            raise ValueError(
                f"{what}: mask size {rle.get('size')} differs from the image's {[height, width]}"
            )
        try:
            if isinstance(rle.get("counts"), list):
                return masks.from_uncompressed(rle)
            return masks.validate(rle, what)
        except (ValueError, TypeError) as error:
            stats.skipped["malformed RLE masks"] += 1
            logger.warning("skipping %s: %s", what, error)
            return None
    polygons = []
    for polygon in segmentation or []:
        if not isinstance(polygon, (list, tuple)):
            stats.skipped["polygons with non-numeric coordinates"] += 1
            continue
        if len(polygon) <= 4:
            stats.skipped["degenerate polygons (<= 4 coordinates)"] += 1
            continue
        problem = _polygon_problem(polygon, height, width)
        if problem is not None:
            stats.skipped[problem] += 1
            logger.warning("skipping a polygon of %s: %s", what, problem)
            continue
        polygons.append([float(v) for v in polygon])
    if not polygons:
        return None
    return masks.from_polygons(polygons, height, width)


def image_shape(image: dict, what: str) -> tuple[int, int]:
    """(height, width) of a json image record, as positive ints; a `ValueError` naming it otherwise."""
    try:
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{what}: image {image.get('id')} has no usable width / height") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"{what}: image {image.get('id')} is {width}x{height}")
    return height, width


def find_image(source_dir: Path, file_name: str) -> Path:
    """The image named by a json record: relative to the source dir, its `images/` or `JPEGImages/` folder, VLPart's
    `VOCdevkit/VOC2010/JPEGImages/`, or by basename."""
    name = Path(file_name)
    for candidate in (
        source_dir / name,
        source_dir / "images" / name,
        source_dir / "images" / name.name,
        source_dir / "JPEGImages" / name.name,
        source_dir / "VOCdevkit" / "VOC2010" / "JPEGImages" / name.name,
        source_dir / name.name,
    ):
        if candidate.exists():
            return candidate
    return source_dir / name


def keep_readable_instances(candidates: list[Instance], stats: ReadStats) -> list[Instance]:
    """Instances whose image exists and has the size the json says (counted and skipped otherwise)."""
    sizes, kept = {}, []
    for instance in candidates:
        path = Path(instance.image_path)
        if not path.exists():
            stats.skipped["instances whose image is missing"] += 1
            continue
        if path not in sizes:
            try:
                sizes[path] = image_size(path)
            except ValueError as error:
                stats.bad(path, error)
                sizes[path] = None
        if sizes[path] is None:
            stats.skipped["instances whose image cannot be read"] += 1
        elif sizes[path] != (instance.width, instance.height):
            stats.skipped["instances whose image size differs from the json (skipped)"] += 1
            logger.warning(
                "skipping %s in %s: the image is %dx%d, the json says %dx%d",
                instance.object,
                path,
                *sizes[path],
                instance.width,
                instance.height,
            )
        else:
            kept.append(instance)
    return kept


def read_json_dir(
    source_dir, source, read_file_fn, stats: ReadStats | None = None, pattern="*.json"
) -> list[Instance]:
    """Every json under `source_dir` read with `read_file_fn`; one instance per object class per image. Bad files
    are counted, logged and skipped; instances whose image is missing or of another size are skipped and counted."""
    source_dir = Path(source_dir)
    stats = stats if stats is not None else ReadStats()
    json_files = sorted(p for p in source_dir.rglob(pattern))
    if not json_files:
        raise FileNotFoundError(f"no {source} annotation json under {source_dir}")
    candidates = []
    for json_path in json_files:
        stats.files += 1
        try:
            candidates.extend(read_file_fn(json_path, source_dir, stats))
        except (OSError, ValueError, KeyError, TypeError) as error:
            stats.bad(json_path, error)
    present = keep_readable_instances(candidates, stats)
    stats.log(source)
    return select_instances(present)
