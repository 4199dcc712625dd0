"""The record every source reader produces: one object instance in one image, with its part masks."""

from __future__ import annotations

import functools
import logging
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from PIL import Image

from . import masks

logger = logging.getLogger(__name__)

# Images above this many pixels are refused before a pixel is decoded: 8192 x 8192, below PIL's own
# DecompressionBombWarning threshold (89.5 M pixels), so that a header declaring 20000 x 20000 never allocates.
MAX_IMAGE_PIXELS = 8192 * 8192
TOO_LARGE = "images above the pixel limit"
TOO_SMALL = "images too small for the model"
UNREADABLE = "images that cannot be read (corrupt or truncated)"
EMPTY_PART = "parts with an empty mask (left out)"


class SkippedRecord(ValueError):
    """A record that cannot be used. `reason` is its count's key in the build report; the message names the record
    and says what is wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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
    strict: bool = False  # raise on the first bad record instead (a reader called by hand on one file)

    def bad(self, path, error):
        self.bad_files.append((str(path), str(error)))
        logger.warning("skipping %s: %s", path, error)

    def skip(self, reason: str, where, detail):
        """Counts one skipped record under `reason` and lists it (`where`: its file and id) with `detail`; with
        `strict`, raises `ValueError(f"{where}: {detail}")` instead."""
        if self.strict:
            message = str(detail)
            raise ValueError(message if message.startswith(str(where)) else f"{where}: {message}")
        self.skipped[reason] += 1
        self.bad(where, detail)

    def log(self, source):
        logger.info(
            "%s: read %d files, %d bad, skipped %s",
            source,
            self.files,
            len(self.bad_files),
            dict(self.skipped),
        )


@functools.cache
def min_image_side() -> int:
    """The smallest image side the model's processor accepts (imported where it is defined, on first use: it pulls in
    torch)."""
    from modeling_plum.processing_plum import MIN_IMAGE_SIDE

    return MIN_IMAGE_SIDE


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file the model can use. `FileNotFoundError` naming a missing file; `SkippedRecord`
    naming the file (reason `TOO_LARGE`, `TOO_SMALL` or `UNREADABLE`) for one above `MAX_IMAGE_PIXELS` (judged from its
    header, before any pixel is decoded; PIL's decompression-bomb error and warning included), under the processor's
    `MIN_IMAGE_SIDE` px a side, or corrupt or truncated (its pixels are decoded once to find out)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise SkippedRecord(
                        TOO_LARGE, f"image {path} is {width}x{height} px, above {MAX_IMAGE_PIXELS:,} pixels"
                    )
                if min(width, height) < min_image_side():
                    raise SkippedRecord(
                        TOO_SMALL,
                        f"image {path} is {width}x{height} px; the model needs {min_image_side()} px a side",
                    )
                # Every pixel is decoded once (a truncated file shows only then); a JPEG at 1/8 scale, which reads
                # all of its data but is faster.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
    except SkippedRecord:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SkippedRecord(TOO_LARGE, f"image {path}: {error}") from None
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError ... for a damaged file
        raise SkippedRecord(UNREADABLE, f"cannot read image {path}: {error}") from None
    return width, height


def text_problem(value, what: str) -> str | None:
    """Why `value` cannot be a string column, or None: not a str, or characters UTF-8 cannot encode (json admits
    lone surrogates such as "\\ud800"; arrow cannot write them)."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} holds characters UTF-8 cannot encode (a lone surrogate?): {value!r}"
    return None


def check_mask_size(rle: dict, width: int, height: int, what: str):
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"{what}: mask size {rle['size'][0]}x{rle['size'][1]} differs from the image's {height}x{width}"
        )


def drop_empty_parts(candidates: list[Instance], stats: ReadStats) -> list[Instance]:
    """The instances with their empty part masks left out (each counted, with its image and part); an instance left
    without a part is skipped and counted."""
    kept = []
    for instance in candidates:
        empty = [name for name, rle in instance.parts.items() if masks.area(rle) == 0]
        for name in empty:
            stats.skip(
                EMPTY_PART, f"{instance.image_path} {instance.object}", f"part {name!r} has an empty mask"
            )
            del instance.parts[name]
        if instance.parts:
            kept.append(instance)
        else:
            stats.skipped["instances without a non-empty part mask"] += 1
    return kept


def select_instances(candidates: list[Instance], stats: ReadStats | None = None) -> list[Instance]:
    """One instance per object class per image: the one with the most non-empty parts, then the largest area (empty
    part masks are left out first, counted in `stats`).

    When the image holds several instances of the class, the chosen one gets its box in `bbox`.
    """
    groups = defaultdict(list)
    for instance in drop_empty_parts(candidates, stats if stats is not None else ReadStats()):
        groups[(instance.image_id, instance.object)].append(instance)
    chosen = []
    for group in groups.values():
        best = max(group, key=lambda inst: (len(inst.parts), masks.area(inst.object_mask)))
        if len(group) > 1:
            best.bbox = masks.bbox(best.object_mask)
        chosen.append(best)
    return chosen
