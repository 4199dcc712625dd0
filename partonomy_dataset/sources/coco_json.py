"""Shared pieces of the COCO-style json readers (PACO is LVIS-style, PartImageNet and VLPart's Pascal-Part are COCO).

Every record is checked before it reaches pycocotools, and a bad one is counted and skipped (with its id and reason in
the build report), never allowed to take the file down: entries that are not objects, ids that are not ints or
strings, polygons with NaN / infinite / far-out coordinates, malformed RLEs and RLEs of another size than their image,
images without a usable width / height or whose `file_name` leaves the source folder, images listed twice under one
id, categories without a name, and images whose real size differs from the json's `width` / `height` (their masks
were drawn for the wrong size). A reader called without `stats` (one file, by hand) raises on the first bad record.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import masks
from ..instances import (
    MAX_IMAGE_PIXELS,
    TOO_LARGE,
    Instance,
    ReadStats,
    SkippedRecord,
    image_size,
    select_instances,
    text_problem,
)
from ..paths import resolve_inside

logger = logging.getLogger(__name__)

IMAGE_FOLDERS = ("images", "JPEGImages", "VOCdevkit/VOC2010/JPEGImages", ".")  # where `find_image` looks
NO_SHAPE = "images without a usable width / height"
MASK_SIZE = "annotations whose mask size differs from their image"
MALFORMED_RLE = "malformed RLE masks"


def load_json(path):
    """Reads a json file; a clear error naming the file when it is missing or corrupt."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"corrupt json in {path}: {error}") from None


def require_keys(data, keys, path):
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} is not a COCO-style annotation file: a {type(data).__name__}, not an object"
        )
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO-style annotation file: missing {missing}")
    for key in keys:
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: `{key}` must be a list, got {type(data[key]).__name__}")


def record_id(value):
    """A json id usable as a key (an int or a string), or None."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


@dataclass
class CocoFile:
    """A COCO-style file, checked: its usable images by id (each with `height`, `width` as ints and `path`, its file
    resolved inside the source folder; ids listed twice left out), its named categories by id, and the ids of the
    images that were skipped."""

    path: Path
    data: dict
    images: dict
    categories: dict
    source_dir: Path
    ambiguous_ids: set = field(default_factory=set)
    skipped_ids: set = field(default_factory=set)

    def image_of(self, ann: dict, stats: ReadStats) -> dict | None:
        """The image of an annotation; None (counted) for an unknown, skipped or ambiguous image id."""
        image_id = record_id(ann.get("image_id"))
        if image_id in self.ambiguous_ids:
            stats.skipped["annotations of an image id listed twice"] += 1
            return None
        if image_id in self.skipped_ids:
            stats.skipped["annotations of a skipped image"] += 1
            return None
        image = self.images.get(image_id)
        if image is None:
            stats.skipped["annotations with unknown image or category"] += 1
        return image

    def masked_annotations(self, stats: ReadStats):
        """`(annotation, image, category, rle)` for every annotation with a known image and a named category and a
        usable mask; every other one is counted in `stats` with its reason."""
        for index, ann in enumerate(self.data["annotations"]):
            if not isinstance(ann, dict):
                what = f"{self.path} annotation #{index}"
                stats.skip("annotation entries that are not objects", what, f"a {type(ann).__name__}")
                continue
            image = self.image_of(ann, stats)
            if image is None:
                continue
            category = self.categories.get(record_id(ann.get("category_id")))
            if category is None:
                stats.skipped["annotations with unknown image or category"] += 1
                continue
            what = f"{self.path} annotation {ann.get('id')!r}"
            try:
                rle = segmentation_to_rle(
                    ann.get("segmentation"), image["height"], image["width"], stats, what
                )
            except SkippedRecord as error:
                stats.skip(error.reason, what, error)
                continue
            if rle is None:
                stats.skipped["annotations without a usable mask"] += 1
                continue
            yield ann, image, category, rle


def _checked_images(entries: list, json_path, source_dir: Path, stats: ReadStats) -> tuple[dict, set, set]:
    """(usable images by id, ids listed twice, ids of skipped images); every image left out is counted."""
    images, seen, skipped = {}, Counter(), set()
    for index, image in enumerate(entries):
        image_id = record_id(image.get("id")) if isinstance(image, dict) else None
        if image_id is None:
            stats.skip(
                "image entries without an int or string id", f"{json_path} image #{index}", repr(image)[:80]
            )
            continue
        seen[image_id] += 1
        try:
            height, width = image_shape(image, str(json_path))
            path = find_image(source_dir, image.get("file_name"))
        except SkippedRecord as error:
            stats.skip(error.reason, f"{json_path} image {image_id!r}", error)
            skipped.add(image_id)
            continue
        images[image_id] = {**image, "height": height, "width": width, "path": str(path)}
    ambiguous = {image_id for image_id, count in seen.items() if count > 1}
    for image_id in ambiguous:
        images.pop(image_id, None)
        stats.skipped["image ids listed twice (both left out)"] += 1
        logger.warning(
            "%s: image id %s is listed %d times; its annotations are left out",
            json_path,
            image_id,
            seen[image_id],
        )
    return images, ambiguous, skipped - ambiguous


def _checked_categories(entries: list, json_path, stats: ReadStats) -> dict:
    categories = {}
    for category in entries:
        category_id = record_id(category.get("id")) if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if category_id is None or text_problem(name, "name") or not name.strip():
            stats.skipped["categories without a name"] += 1
            logger.warning(
                "%s: category %r has no usable id and name; its annotations are left out", json_path, category
            )
            continue
        supercategory = category.get("supercategory")
        if supercategory is not None and text_problem(supercategory, "supercategory"):
            category = {**category, "supercategory": None}
        categories[category_id] = category
    return categories


def load_coco(json_path, source_dir=None, stats: ReadStats | None = None) -> CocoFile:
    """A COCO-style file with its images and categories checked (see `CocoFile`)."""
    stats = stats if stats is not None else ReadStats(strict=True)
    source_dir = Path(source_dir) if source_dir is not None else Path(json_path).parent
    data = load_json(json_path)
    require_keys(data, ("images", "annotations", "categories"), json_path)
    images, ambiguous, skipped = _checked_images(data["images"], json_path, source_dir, stats)
    categories = _checked_categories(data["categories"], json_path, stats)
    return CocoFile(Path(json_path), data, images, categories, source_dir, ambiguous, skipped)


def segmentation_to_rle(segmentation, height: int, width: int, stats: ReadStats, what: str) -> dict | None:
    """COCO segmentation (polygons, compressed or uncompressed RLE) → RLE; None when nothing usable is left.

    Polygons that pycocotools cannot be given (`masks.checked_polygons`: degenerate, NaN, infinite, non-numeric or
    far-out coordinates, which would make it run out of memory or crash) are skipped and counted. An RLE of another
    size than the image, or a malformed one, raises `SkippedRecord` naming `what`.
    """
    if isinstance(segmentation, dict):
        try:
            size = masks.checked_size(segmentation, what)
            if list(size) != [height, width]:
                raise SkippedRecord(
                    MASK_SIZE, f"{what}: mask size {list(size)} differs from the image's {[height, width]}"
                )
            if isinstance(segmentation.get("counts"), list):
                return masks.from_uncompressed(segmentation, what)
            return masks.validate(segmentation, what)
        except SkippedRecord:
            raise
        except (ValueError, TypeError) as error:
            raise SkippedRecord(MALFORMED_RLE, str(error)) from None
    polygons, problems = masks.checked_polygons(segmentation or [], height, width)
    for problem in problems:
        stats.skipped[problem] += 1
        logger.warning("skipping a polygon of %s: %s", what, problem)
    if not polygons:
        return None
    return masks.from_polygons(polygons, height, width)


def image_shape(image: dict, what: str) -> tuple[int, int]:
    """(height, width) of a json image record, as positive ints at most `MAX_IMAGE_PIXELS` in all; `SkippedRecord`
    naming it otherwise."""
    height, width = image.get("height"), image.get("width")
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
        for v in (height, width)
    ):
        raise SkippedRecord(NO_SHAPE, f"{what}: image {image.get('id')!r} has no usable width / height")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise SkippedRecord(NO_SHAPE, f"{what}: image {image.get('id')!r} is {width}x{height}")
    if height * width > MAX_IMAGE_PIXELS:
        raise SkippedRecord(
            TOO_LARGE,
            f"{what}: image {image.get('id')!r} is {width}x{height}, above {MAX_IMAGE_PIXELS:,} pixels",
        )
    return height, width


def find_image(source_dir: Path, file_name) -> Path:
    """The image named by a json record, resolved inside `source_dir` (`paths.resolve_inside`): relative to it, its
    `images/` or `JPEGImages/` folder, VLPart's `VOCdevkit/VOC2010/JPEGImages/`, or by basename. A missing image gives
    the path it would have (counted as missing later); one outside the source folder raises `SkippedRecord`."""
    try:
        return resolve_inside(source_dir, file_name, IMAGE_FOLDERS)
    except FileNotFoundError:
        return Path(source_dir) / file_name


def keep_readable_instances(candidates: list[Instance], stats: ReadStats) -> list[Instance]:
    """Instances whose image exists, can be used (`image_size`) and has the size the json says (counted and skipped
    otherwise)."""
    sizes, kept = {}, []
    for instance in candidates:
        path = Path(instance.image_path)
        if not path.exists():
            stats.skipped["instances whose image is missing"] += 1
            continue
        if path not in sizes:
            try:
                sizes[path] = image_size(path)
            except SkippedRecord as error:
                stats.skip(error.reason, path, error)
                sizes[path] = None
        if sizes[path] is None:
            stats.skipped["instances whose image cannot be used"] += 1
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
    are counted, logged and skipped; so are bad records inside a file (the rest of the file is kept); instances whose
    image is missing, unusable or of another size are skipped and counted."""
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
    return select_instances(present, stats)
