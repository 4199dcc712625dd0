"""The record every source reader produces: one object instance in one image, with its part masks."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from PIL import Image

from . import masks

logger = logging.getLogger(__name__)


@dataclass
class Instance:
    """One object instance with its parts.

    Attributes:
        source: the source config (`pascal_part`, `paco`, `partimagenet`, `core`, `toy`).
        image_id: the image's id within its source.
        image_path: path of the image file.
        width, height: the image size in pixels.
        object: natural-language object label ("dog", "agricultural airplane").
        category: superordinate category ("animal", "airplanes").
        parts: part name → RLE (`{"size": [h, w], "counts": str}`), one mask per part name.
        object_mask: RLE of the whole object (the union of its parts where the source has none).
        bbox: `[x, y, w, h]` of the object, set only when the image holds several instances of its class
            (the question image then shows the box to say which one is meant).
        split: the split the source assigns (VLPart's `train.json` / `val.json`); None lets the builder split.
    """

    source: str
    image_id: str
    image_path: str
    width: int
    height: int
    object: str
    category: str
    parts: dict[str, dict]
    object_mask: dict
    bbox: list[float] | None = None
    split: str | None = None


@dataclass
class ReadStats:
    """What a reader skipped, with reasons, so that nothing is dropped silently."""

    files: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def bad(self, path, error):
        self.bad_files.append((str(path), str(error)))
        logger.warning("skipping %s: %s", path, error)

    def log(self, source):
        logger.info(
            "%s: read %d files, %d bad, skipped %s",
            source,
            self.files,
            len(self.bad_files),
            dict(self.skipped),
        )


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header; a clear error naming the file otherwise."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def check_mask_size(rle: dict, width: int, height: int, what: str):
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"{what}: mask size {rle['size'][0]}x{rle['size'][1]} differs from the image's {height}x{width}"
        )


def select_instances(candidates: list[Instance]) -> list[Instance]:
    """One instance per object class per image: the one with the most parts, then the largest area.

    When the image holds several instances of the class, the chosen one gets its box in `bbox`.
    """
    groups = defaultdict(list)
    for instance in candidates:
        groups[(instance.image_id, instance.object)].append(instance)
    chosen = []
    for group in groups.values():
        best = max(group, key=lambda inst: (len(inst.parts), masks.area(inst.object_mask)))
        if len(group) > 1:
            best.bbox = masks.bbox(best.object_mask)
        chosen.append(best)
    return chosen
