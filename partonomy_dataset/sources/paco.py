"""PACO reader (LVIS-style json: `images`, `annotations`, `categories`, `part_categories`).

Object annotations carry an object category (`car_(automobile)`); part annotations carry an `object:part`
category (`car_(automobile):wheel`) and `obj_ann_id`, the id of their object's annotation. Names lose their
`_(…)` qualifier and `_` becomes a space (`trash_can` → `trash can`).

The same reader reads the `custom` config, a user's own part annotations in this layout (`read_dir(..., source=
"custom")`); docs/finetune-your-parts.md says which fields it needs.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict

from .. import masks
from ..instances import Instance, ReadStats
from .coco_json import load_coco, read_json_dir, record_id

SOURCE = "paco"
DEFAULT_CATEGORY = "common object"


def clean_name(name: str) -> str:
    """`car_(automobile)` → `car`, `trash_can` → `trash can`."""
    return re.sub(r"_\([^)]*\)", "", name).replace("_", " ").strip()


def read_file(
    json_path, source_dir=None, stats: ReadStats | None = None, source: str = SOURCE
) -> list[Instance]:
    """All object instances with at least one part in one PACO annotation file (before selection), their `source`
    set to `source`. A bad record is counted in `stats` and skipped; without `stats`, it is an error naming it."""
    stats = stats if stats is not None else ReadStats(strict=True)
    coco = load_coco(json_path, source_dir, stats)

    objects, parts = {}, defaultdict(lambda: defaultdict(list))
    for ann, image, category, rle in coco.masked_annotations(stats):
        if ":" in category["name"]:
            if record_id(ann.get("obj_ann_id")) is None:
                stats.skipped["part annotations without obj_ann_id"] += 1
                continue
            part = clean_name(category["name"].split(":", 1)[1])
            parts[ann["obj_ann_id"]][part].append(rle)
        elif record_id(ann.get("id")) is None:
            stats.skip(
                "object annotations without an int or string id",
                f"{json_path} image {image['id']!r}",
                f"an object annotation's id is {ann.get('id')!r}",
            )
        else:
            objects[ann["id"]] = (image, category, rle)

    instances = []
    for ann_id, (image, category, object_rle) in objects.items():
        if ann_id not in parts:
            stats.skipped["objects without parts"] += 1
            continue
        instances.append(
            Instance(
                source=source,
                image_id=str(image["id"]),
                image_path=image["path"],
                width=image["width"],
                height=image["height"],
                object=clean_name(category["name"]),
                category=clean_name(category.get("supercategory") or DEFAULT_CATEGORY),
                parts={name: masks.union(rles) for name, rles in sorted(parts[ann_id].items())},
                object_mask=object_rle,
            )
        )
    orphans = set(parts) - set(objects)
    if orphans:
        stats.skipped["parts whose object annotation is missing"] += len(orphans)
    return instances


def read_dir(source_dir, stats: ReadStats | None = None, source: str = SOURCE) -> list[Instance]:
    """Every PACO-layout json under `source_dir` (`source`: the config it is read for, `paco` or `custom`); one
    instance per object class per image. Bad files are counted, logged and skipped; images that are missing on disk
    are skipped and counted."""
    return read_json_dir(source_dir, source, functools.partial(read_file, source=source), stats)
