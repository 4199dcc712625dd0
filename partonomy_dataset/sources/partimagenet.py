"""PartImageNet reader (COCO json). A category is a super-category plus a part ("Quadruped Head"); the
object is the super-category (the paper's choice: its parts are the same across its classes). Polygons with
at most 4 coordinates are skipped and counted; the source's typo `Tier` is read as `tire`.
"""

from __future__ import annotations

from collections import defaultdict

from .. import masks
from ..instances import Instance, ReadStats
from .coco_json import load_coco, read_json_dir

SOURCE = "partimagenet"
TYPOS = {"tier": "tire"}
# super-category → the superordinate category used to restrict wrong answers
CATEGORIES = {
    "quadruped": "animal",
    "biped": "animal",
    "fish": "animal",
    "bird": "animal",
    "snake": "animal",
    "reptile": "animal",
    "car": "vehicle",
    "bicycle": "vehicle",
    "boat": "vehicle",
    "aeroplane": "vehicle",
    "bottle": "household object",
}


def part_name(category: dict) -> tuple[str, str]:
    """(object, part) of a PartImageNet category: supercategory "Quadruped", name "Head" → (quadruped, head)."""
    supercategory = (category.get("supercategory") or "").strip().lower()
    name = category["name"].strip().lower()
    if supercategory and name.startswith(supercategory + " "):  # names written as "Quadruped Head"
        name = name[len(supercategory) + 1 :]
    if not supercategory and " " in name:
        supercategory, name = name.split(" ", 1)
    name = " ".join(TYPOS.get(word, word) for word in name.split())
    return supercategory, name


def read_file(json_path, source_dir=None, stats: ReadStats | None = None) -> list[Instance]:
    """The instances of one PartImageNet json (before selection). A bad record is counted in `stats` and skipped;
    without `stats`, it is an error naming it."""
    stats = stats if stats is not None else ReadStats(strict=True)
    coco = load_coco(json_path, source_dir, stats)
    grouped = defaultdict(lambda: defaultdict(list))  # (image, object) → part → rles
    for ann, _, category, rle in coco.masked_annotations(stats):
        obj, part = part_name(category)
        grouped[(ann["image_id"], obj)][part].append(rle)
    instances = []
    for (image_id, obj), parts in grouped.items():
        image = coco.images[image_id]
        part_masks = {name: masks.union(rles) for name, rles in sorted(parts.items())}
        instances.append(
            Instance(
                source=SOURCE,
                image_id=str(image_id),
                image_path=image["path"],
                width=image["width"],
                height=image["height"],
                object=obj,
                category=CATEGORIES.get(obj, "object"),
                parts=part_masks,
                object_mask=masks.union(list(part_masks.values())),
            )
        )
    return instances


def read_dir(source_dir, stats: ReadStats | None = None) -> list[Instance]:
    return read_json_dir(source_dir, SOURCE, read_file, stats)
