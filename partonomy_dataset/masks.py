"""COCO RLE helpers (pycocotools) shared by every source reader and the question builder.

An RLE is stored as `{"size": [height, width], "counts": str}`: the compressed COCO string decoded as
UTF-8, which is how it travels through json and parquet.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


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


def validate(rle: dict, what: str) -> dict:
    """A compressed RLE from outside (a json file) checked before pycocotools reads it: `size` two non-negative ints,
    `counts` a string that decodes to exactly height x width pixels (a truncated string would make pycocotools read
    past its end). Returns the normalised RLE; raises `ValueError` naming `what`."""
    from metrics.giou.giou import check_rles

    size = rle.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in size)
    ):
        raise ValueError(f"{what}: RLE size must be [height, width], got {size!r}")
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


def from_polygons(polygons: list[list[float]], height: int, width: int) -> dict:
    """COCO polygons ([[x1, y1, x2, y2, ...], ...]) → one RLE."""
    return union([normalise(r) for r in mask_utils.frPyObjects(polygons, height, width)])


def from_uncompressed(rle: dict) -> dict:
    """Uncompressed COCO RLE (`counts` as a list of run lengths) → compressed RLE. The runs must be non-negative
    integers covering exactly height x width pixels."""
    height, width = (int(v) for v in rle["size"])
    runs = rle["counts"]
    if not all(isinstance(r, (int, np.integer)) and r >= 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(
            f"uncompressed RLE runs must be non-negative integers summing to {height}x{width} = {height * width}"
        )
    return normalise(mask_utils.frPyObjects(rle, height, width))
