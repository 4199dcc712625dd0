"""COCO RLE helpers (pycocotools) shared by every source reader and the question builder.

An RLE is stored as `{"size": [height, width], "counts": str}`: the compressed COCO string decoded as
UTF-8, which is how it travels through json and parquet.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_utils

# A polygon coordinate may lie a little outside its image (pycocotools clips it), not anywhere: far-out, NaN or
# infinite coordinates make pycocotools run out of memory or crash.
MAX_OUTSIDE = 1.0  # in image sizes beyond each border


def encode(mask: np.ndarray) -> dict:
    """Dense 2-D mask (non-zero = foreground) → RLE with a str `counts`."""
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("utf-8")}


def _coco(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("utf-8") if isinstance(counts, str) else counts,
    }


def normalise(rle: dict) -> dict:
    """Any compressed RLE dict → `{"size": [int, int], "counts": str}`."""
    counts = rle["counts"]
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts,
    }


def checked_size(rle, what: str) -> tuple[int, int]:
    """(height, width) of an RLE from outside (a json file): two non-negative integers, else `ValueError` naming
    `what` (a size of `[8.7, 8.2]` is refused, never truncated)."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise ValueError(f"{what}: RLE size must be [height, width] as two integers, got {size!r}")
    return int(size[0]), int(size[1])


def validate(rle: dict, what: str) -> dict:
    """A compressed RLE from outside (a json file) checked before pycocotools reads it: `size` two non-negative ints,
    `counts` a string that decodes to exactly height x width pixels (a truncated string would make pycocotools read
    past its end). Returns the normalised RLE; raises `ValueError` naming `what`."""
    from metrics.giou.giou import check_rles

    checked_size(rle, what)
    counts = rle.get("counts")
    if not isinstance(counts, (str, bytes)):
        raise ValueError(f"{what}: compressed RLE counts must be a string, got {type(counts).__name__}")
    normalised = normalise(rle)
    check_rles([{**normalised, "counts": normalised["counts"].encode("utf-8")}], [what], ["the mask"])
    return normalised


def decode(rle: dict) -> np.ndarray:
    """RLE → dense bool array of shape (height, width)."""
    return mask_utils.decode(_coco(rle)).astype(bool)


def union(rles: list[dict]) -> dict:
    """Pixel-wise union of RLEs of one size."""
    if len(rles) == 1:
        return normalise(rles[0])
    return normalise(mask_utils.merge([_coco(r) for r in rles], intersect=False))


def area(rle: dict) -> int:
    return int(mask_utils.area(_coco(rle)))


def bbox(rle: dict) -> list[float]:
    """[x, y, width, height] of the mask's foreground (COCO convention)."""
    return [float(v) for v in mask_utils.toBbox(_coco(rle))]


def polygon_problem(polygon, height: int, width: int) -> str | None:
    """Why one COCO polygon (`[x1, y1, x2, y2, ...]`) cannot be given to pycocotools, or None. The reasons are the
    keys under which readers count what they skip."""
    if not isinstance(polygon, (list, tuple)):
        return "polygons with non-numeric coordinates"
    if len(polygon) <= 4:
        return "degenerate polygons (<= 4 coordinates)"
    try:
        values = [float(v) for v in polygon]
    except (TypeError, ValueError, OverflowError):
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


def checked_polygons(polygons, height: int, width: int) -> tuple[list[list[float]], list[str]]:
    """The polygons of a COCO segmentation that pycocotools may read (as floats), and the problem of each one left
    out (see `polygon_problem`). Every reader of polygons goes through here before `from_polygons`."""
    if not isinstance(polygons, (list, tuple)):
        return [], ["polygons with non-numeric coordinates"]
    kept, problems = [], []
    for polygon in polygons:
        problem = polygon_problem(polygon, height, width)
        if problem is None:
            kept.append([float(v) for v in polygon])
        else:
            problems.append(problem)
    return kept, problems


def from_polygons(polygons: list[list[float]], height: int, width: int) -> dict:
    """COCO polygons ([[x1, y1, x2, y2, ...], ...]) → one RLE. Pass them through `checked_polygons` first."""
    return union([normalise(r) for r in mask_utils.frPyObjects(polygons, height, width)])


def from_uncompressed(rle: dict, what: str = "uncompressed RLE") -> dict:
    """Uncompressed COCO RLE (`counts` as a list of run lengths) → compressed RLE. The size must be two integers and
    the runs non-negative integers covering exactly height x width pixels; `ValueError` naming `what` otherwise."""
    height, width = checked_size(rle, what)
    runs = rle["counts"]
    if (
        not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 0 for r in runs)
        or sum(runs) != height * width
    ):
        raise ValueError(
            f"{what}: uncompressed RLE runs must be non-negative integers summing to {height}x{width} = "
            f"{height * width}"
        )
    return normalise(mask_utils.frPyObjects(rle, height, width))
