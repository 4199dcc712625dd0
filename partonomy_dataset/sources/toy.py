"""`toy`: procedurally drawn objects made of parts, with exact part masks.

Every object class is a list of parts in drawing order; every part is one or more shapes in a unit frame
(x right, y down, the object inside [-1, 1]²). An image draws one object at a random position and scale, with
a random rotation (±15°), an optional mirror, a random colour per part and a noisy background, so that parts
are told apart by shape and layout, never by a fixed colour. A part's mask is what stays visible after the
parts drawn over it; parts hidden below `MIN_PART_PIXELS` are left out. Deterministic for a given seed.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .. import masks
from ..instances import Instance

SOURCE = "toy"
MIN_PART_PIXELS = 6
DEFAULT_IMAGE_SIZE = 128


def rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def ellipse(cx, cy, rx, ry, points=20):
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def circle(cx, cy, r):
    return ellipse(cx, cy, r, r)


def tri(*points):
    return list(points)


# object → (category, [(part, [shape, ...]), ...] in drawing order)
OBJECTS: dict[str, tuple[str, list[tuple[str, list]]]] = {
    "car": (
        "vehicle",
        [
            (
                "body",
                [rect(-1, -0.05, 1, 0.42), tri((-0.55, -0.05), (-0.35, -0.5), (0.35, -0.5), (0.62, -0.05))],
            ),
            (
                "window",
                [
                    tri((-0.45, -0.1), (-0.3, -0.42), (0.05, -0.42), (0.05, -0.1)),
                    tri((0.15, -0.1), (0.15, -0.42), (0.3, -0.42), (0.5, -0.1)),
                ],
            ),
            ("door", [rect(-0.25, 0.0, 0.2, 0.36)]),
            ("headlight", [ellipse(0.9, 0.08, 0.1, 0.07)]),
            ("wheel", [circle(-0.58, 0.45, 0.24), circle(0.6, 0.45, 0.24)]),
        ],
    ),
    "truck": (
        "vehicle",
        [
            ("cargo box", [rect(-1, -0.75, 0.3, 0.4)]),
            ("cab", [rect(0.35, -0.45, 1, 0.4)]),
            ("window", [rect(0.5, -0.35, 0.9, -0.05)]),
            ("headlight", [ellipse(0.95, 0.2, 0.06, 0.08)]),
            ("wheel", [circle(-0.65, 0.45, 0.2), circle(-0.15, 0.45, 0.2), circle(0.7, 0.45, 0.2)]),
        ],
    ),
    "bus": (
        "vehicle",
        [
            ("body", [rect(-1, -0.55, 1, 0.4)]),
            ("window", [rect(x, -0.45, x + 0.3, -0.1) for x in (-0.9, -0.5, -0.1)]),
            ("door", [rect(0.4, -0.45, 0.75, 0.35)]),
            ("headlight", [ellipse(0.92, 0.22, 0.06, 0.08)]),
            ("wheel", [circle(-0.6, 0.42, 0.2), circle(0.6, 0.42, 0.2)]),
        ],
    ),
    "bicycle": (
        "vehicle",
        [
            ("wheel", [circle(-0.55, 0.35, 0.42), circle(0.6, 0.35, 0.42)]),
            (
                "frame",
                [
                    tri((-0.55, 0.35), (-0.1, -0.25), (-0.02, -0.2), (-0.45, 0.38)),
                    tri((-0.1, -0.25), (0.45, -0.25), (0.45, -0.15), (-0.1, -0.15)),
                    tri((0.4, -0.3), (0.65, 0.35), (0.55, 0.38), (0.32, -0.25)),
                    tri((-0.45, 0.32), (0.05, 0.3), (0.05, 0.4), (-0.45, 0.42)),
                ],
            ),
            ("saddle", [ellipse(-0.12, -0.38, 0.2, 0.08)]),
            ("handlebar", [rect(0.35, -0.55, 0.5, -0.28), rect(0.25, -0.62, 0.62, -0.52)]),
        ],
    ),
    "house": (
        "building",
        [
            ("chimney", [rect(0.4, -0.95, 0.62, -0.45)]),
            ("wall", [rect(-0.8, -0.2, 0.8, 0.95)]),
            ("roof", [tri((-1, -0.2), (0, -0.9), (1, -0.2))]),
            ("door", [rect(-0.15, 0.4, 0.2, 0.95)]),
            ("window", [rect(-0.62, 0.05, -0.3, 0.35), rect(0.4, 0.05, 0.7, 0.35)]),
        ],
    ),
    "barn": (
        "building",
        [
            ("wall", [tri((-0.85, -0.1), (0, -0.55), (0.85, -0.1), (0.85, 0.95), (-0.85, 0.95))]),
            (
                "roof",
                [
                    tri(
                        (-1, -0.05),
                        (-0.75, -0.5),
                        (0, -0.95),
                        (0.75, -0.5),
                        (1, -0.05),
                        (0.85, -0.05),
                        (0, -0.6),
                        (-0.85, -0.05),
                    )
                ],
            ),
            ("door", [rect(-0.35, 0.3, 0.35, 0.95)]),
            ("window", [circle(0, -0.15, 0.16)]),
        ],
    ),
    "lighthouse": (
        "building",
        [
            ("tower", [tri((-0.35, -0.35), (0.35, -0.35), (0.55, 0.95), (-0.55, 0.95))]),
            ("lantern", [rect(-0.3, -0.65, 0.3, -0.35)]),
            ("roof", [tri((-0.4, -0.65), (0, -1), (0.4, -0.65))]),
            ("door", [rect(-0.15, 0.55, 0.15, 0.95)]),
            ("window", [rect(-0.1, -0.05, 0.1, 0.15), rect(-0.1, 0.25, 0.1, 0.42)]),
        ],
    ),
    "cat": (
        "animal",
        [
            ("tail", [tri((-0.55, 0.1), (-0.95, -0.5), (-0.85, -0.55), (-0.45, 0.0))]),
            ("leg", [rect(x, 0.3, x + 0.14, 0.85) for x in (-0.5, -0.25, 0.15, 0.38)]),
            ("body", [ellipse(-0.05, 0.2, 0.6, 0.3)]),
            (
                "ear",
                [
                    tri((0.42, -0.35), (0.5, -0.75), (0.62, -0.4)),
                    tri((0.7, -0.4), (0.85, -0.75), (0.9, -0.32)),
                ],
            ),
            ("head", [ellipse(0.65, -0.15, 0.3, 0.27)]),
            ("eye", [circle(0.58, -0.22, 0.05), circle(0.78, -0.22, 0.05)]),
        ],
    ),
    "dog": (
        "animal",
        [
            ("tail", [tri((-0.6, 0.0), (-0.95, -0.35), (-0.88, -0.42), (-0.55, -0.1))]),
            ("leg", [rect(x, 0.3, x + 0.16, 0.9) for x in (-0.55, -0.3, 0.15, 0.4)]),
            ("body", [ellipse(-0.05, 0.15, 0.62, 0.3)]),
            ("head", [ellipse(0.6, -0.3, 0.27, 0.27)]),
            ("ear", [ellipse(0.42, -0.25, 0.09, 0.22)]),
            ("nose", [ellipse(0.92, -0.28, 0.09, 0.07)]),
            ("eye", [circle(0.66, -0.38, 0.05)]),
        ],
    ),
    "bird": (
        "animal",
        [
            ("leg", [rect(-0.1, 0.35, -0.03, 0.85), rect(0.1, 0.35, 0.17, 0.85)]),
            ("tail", [tri((-0.45, 0.05), (-1, -0.2), (-1, 0.3))]),
            ("body", [ellipse(0, 0.05, 0.55, 0.35)]),
            ("wing", [tri((-0.3, -0.05), (0.3, -0.05), (-0.15, 0.3))]),
            ("head", [circle(0.52, -0.42, 0.25)]),
            ("beak", [tri((0.72, -0.5), (1, -0.42), (0.72, -0.34))]),
            ("eye", [circle(0.58, -0.48, 0.05)]),
        ],
    ),
    "fish": (
        "animal",
        [
            ("tail", [tri((-0.55, 0), (-1, -0.45), (-1, 0.45))]),
            (
                "fin",
                [tri((-0.2, -0.3), (0.1, -0.75), (0.3, -0.3)), tri((-0.1, 0.3), (0.1, 0.65), (0.25, 0.3))],
            ),
            ("body", [ellipse(0.05, 0, 0.65, 0.38)]),
            ("eye", [circle(0.45, -0.08, 0.07)]),
        ],
    ),
    "tree": (
        "plant",
        [
            ("trunk", [rect(-0.15, 0.0, 0.15, 1)]),
            ("crown", [ellipse(0, -0.35, 0.75, 0.6)]),
        ],
    ),
    "flower": (
        "plant",
        [
            ("stem", [rect(-0.05, -0.1, 0.05, 1)]),
            ("leaf", [ellipse(-0.25, 0.5, 0.22, 0.09), ellipse(0.25, 0.3, 0.22, 0.09)]),
            (
                "petal",
                [
                    circle(0.28 * np.cos(a), -0.45 + 0.28 * np.sin(a), 0.17)
                    for a in np.linspace(0, 2 * np.pi, 6)[:-1]
                ],
            ),
            ("pistil", [circle(0, -0.45, 0.14)]),
        ],
    ),
    "lamp": (
        "furniture",
        [
            ("base", [ellipse(0, 0.88, 0.45, 0.12)]),
            ("pole", [rect(-0.06, -0.35, 0.06, 0.85)]),
            ("shade", [tri((-0.3, -0.85), (0.3, -0.85), (0.55, -0.3), (-0.55, -0.3))]),
        ],
    ),
    "table": (
        "furniture",
        [
            ("leg", [rect(-0.85, -0.1, -0.7, 0.9), rect(0.7, -0.1, 0.85, 0.9)]),
            ("tabletop", [rect(-1, -0.25, 1, -0.05)]),
        ],
    ),
    "chair": (
        "furniture",
        [
            ("backrest", [rect(-0.5, -0.95, -0.32, 0.1)]),
            ("leg", [rect(-0.5, 0.1, -0.38, 0.9), rect(0.38, 0.1, 0.5, 0.9)]),
            ("seat", [rect(-0.55, -0.02, 0.55, 0.15)]),
        ],
    ),
    "bottle": (
        "furniture",
        [
            ("body", [rect(-0.35, -0.2, 0.35, 0.95), ellipse(0, -0.2, 0.35, 0.15)]),
            ("neck", [rect(-0.13, -0.7, 0.13, -0.25)]),
            ("cap", [rect(-0.16, -0.9, 0.16, -0.68)]),
            ("label", [rect(-0.35, 0.15, 0.35, 0.55)]),
        ],
    ),
}


def _random_colour(rng) -> np.ndarray:
    hue, saturation, value = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255


def draw_object(
    object_name: str, rng, size: int = DEFAULT_IMAGE_SIZE
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draws one object. Returns the RGB image (size × size × 3, uint8) and part name → visible mask."""
    _, parts = OBJECTS[object_name]
    half_extent = rng.uniform(0.3, 0.45) * size
    centre = rng.uniform(half_extent * 0.9, size - half_extent * 0.9, size=2)
    angle = np.deg2rad(rng.uniform(-15, 15))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    label_map = Image.new("I", (size, size), 0)
    painter = ImageDraw.Draw(label_map)
    for index, (_, shapes) in enumerate(parts, start=1):
        for shape in shapes:
            points = np.asarray(shape, dtype=np.float64) * [mirror, 1.0]
            points = points @ rotation.T * half_extent + centre
            painter.polygon([tuple(p) for p in points], fill=index)
    labels = np.asarray(label_map, dtype=np.int32)

    background = _random_colour(rng)
    image = np.broadcast_to(background, (size, size, 3)) + rng.normal(0, 14, (size, size, 3))
    part_masks = {}
    for index, (name, _) in enumerate(parts, start=1):
        mask = labels == index
        if mask.sum() < MIN_PART_PIXELS:
            continue
        part_masks[name] = mask
        shade = rng.normal(0, 8, (size, size, 1))
        image = np.where(mask[..., None], _random_colour(rng) + shade, image)
    return np.clip(image, 0, 255).astype(np.uint8), part_masks


def generate(out_dir, num_images: int, seed: int = 42, size: int = DEFAULT_IMAGE_SIZE) -> list[Instance]:
    """Draws `num_images` images into `out_dir` (JPEG) and returns their instances. Object classes cycle so
    every class gets the same number of images; everything else comes from a per-image generator."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(OBJECTS)
    instances = []
    for index in tqdm(range(num_images), desc="drawing toy images", leave=False):
        rng = np.random.default_rng([seed, index])
        object_name = names[index % len(names)]
        image, part_masks = draw_object(object_name, rng, size)
        image_id = f"toy_{index:06d}"
        path = out_dir / f"{image_id}.jpg"
        buffer = io.BytesIO()
        # JPEG: the noisy background makes PNGs ~6x larger, and the dataset stores one image per question.
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
        rles = {name: masks.encode(mask) for name, mask in sorted(part_masks.items())}
        instances.append(
            Instance(
                source=SOURCE,
                image_id=image_id,
                image_path=str(path),
                width=size,
                height=size,
                object=object_name,
                category=OBJECTS[object_name][0],
                parts=rles,
                object_mask=masks.union(list(rles.values())),
            )
        )
    return instances
