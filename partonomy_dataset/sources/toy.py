"""`toy`: procedurally drawn objects made of parts, with exact part masks.

Every object class is a list of parts in drawing order; every part is one or more shapes in a unit frame
(x right, y down, the object inside [-1, 1]²). An image draws one object at a random position and scale, with
a random rotation (±15°), an optional mirror, a random colour per part (kept apart from its neighbours' colours)
and a noisy background, so that parts are told apart by shape and layout, never by a fixed colour.

Instances differ in what they show, as real ones do: each part of an object is absent from an image with probability
`ABSENT_PROBABILITY` (a car seen without its mirror, a house without its chimney, a lighthouse without its door), a
part drawn on another one (an eye on a head) goes with it, and enough stays for the object to be recognised (one of
its `LARGE_PARTS` and at least `min_present_parts`). So the correct answer to "what visible parts does the car
have?" differs from image to image, and the paper's mutations (adding and removing plausible parts) give wrong
answers that only the image rules out. Every object has 6-9 parts, some shared within its category (a barn has a
chimney as a house does, a table and a chair stand on feet): an object of few parts has few possible part sets, and
a mutation drawing from a category of unlike objects adds a part the object never has, both of which the question
text alone gives away. A part's mask is what stays visible after the parts drawn over it; a part left with fewer
than `MIN_PART_PIXELS` visible pixels is not drawn at all, so that "in the answer" and "visible in the image" always
agree. Deterministic for a given seed.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .. import atomic, masks
from ..instances import Instance

SOURCE = "toy"
MIN_PART_PIXELS = 24  # at 128 px, about a 5 x 5 px patch: visible to the models, not a stray speck
DEFAULT_IMAGE_SIZE = 128
ABSENT_PROBABILITY = 0.5
MIN_COLOUR_DISTANCE = 90.0
# The pose: object-centric images (as PARTONOMY-Core's), the object's half-extent a share of the image side, its
# centre within a jitter of the image centre, a rotation up to MAX_ROTATION degrees and a mirror.
SCALE = (0.40, 0.44)
CENTRE_JITTER = 0.03
MAX_ROTATION = 5.0  # RGB distance between a part's colour and the colours drawn before it


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
            ("mirror", [tri((0.42, -0.2), (0.66, -0.28), (0.66, -0.06), (0.42, -0.06))]),
            ("license plate", [rect(-1.04, 0.04, -0.86, 0.22)]),
            ("bumper", [rect(0.9, 0.24, 1.08, 0.42), rect(-1.08, 0.26, -0.92, 0.42)]),
        ],
    ),
    "truck": (
        "vehicle",
        [
            ("cargo box", [rect(-1, -0.75, 0.3, 0.4)]),
            ("cab", [rect(0.35, -0.45, 1, 0.4)]),
            ("license plate", [rect(-1.04, 0.1, -0.86, 0.28)]),
            ("window", [rect(0.5, -0.35, 0.9, -0.05)]),
            ("door", [rect(0.45, 0.0, 0.75, 0.36)]),
            ("headlight", [ellipse(0.95, 0.2, 0.06, 0.08)]),
            ("wheel", [circle(-0.65, 0.45, 0.2), circle(-0.15, 0.45, 0.2), circle(0.7, 0.45, 0.2)]),
            ("mirror", [rect(0.28, -0.38, 0.4, -0.12)]),
            ("bumper", [rect(0.92, 0.26, 1.1, 0.42)]),
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
            ("mirror", [rect(0.96, -0.5, 1.08, -0.2)]),
            ("license plate", [rect(-1.04, 0.06, -0.86, 0.24)]),
            ("bumper", [rect(0.94, 0.26, 1.1, 0.42)]),
        ],
    ),
    "bicycle": (
        "cycle",
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
            ("pedal", [rect(-0.12, 0.3, 0.12, 0.45)]),
            ("basket", [rect(0.55, -0.5, 0.9, -0.22)]),
            ("headlight", [ellipse(0.68, -0.12, 0.08, 0.07)]),
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
            ("handle", [circle(0.1, 0.7, 0.06)]),
            ("step", [rect(-0.3, 0.9, 0.35, 1.0)]),
        ],
    ),
    "barn": (
        "building",
        [
            ("chimney", [rect(0.45, -0.85, 0.62, -0.4)]),
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
            ("cupola", [rect(-0.14, -1.0, 0.14, -0.8)]),
            ("door", [rect(-0.35, 0.3, 0.35, 0.95)]),
            (
                "beam",
                [tri((-0.35, 0.3), (-0.25, 0.3), (0.35, 0.85), (0.35, 0.95), (0.25, 0.95), (-0.35, 0.4))],
            ),
            ("window", [circle(0, -0.15, 0.16)]),
        ],
    ),
    "lighthouse": (
        "building",
        [
            ("tower", [tri((-0.35, -0.35), (0.35, -0.35), (0.55, 0.95), (-0.55, 0.95))]),
            ("stripe", [tri((-0.41, 0.05), (0.41, 0.05), (0.44, 0.22), (-0.44, 0.22))]),
            ("lantern", [rect(-0.3, -0.65, 0.3, -0.35)]),
            ("gallery", [rect(-0.46, -0.4, 0.46, -0.3)]),
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
            ("eye", [circle(0.56, -0.2, 0.07), circle(0.78, -0.2, 0.07)]),
            ("nose", [tri((0.62, -0.05), (0.74, -0.05), (0.68, 0.04))]),
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
            ("eye", [circle(0.66, -0.38, 0.07)]),
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
            ("eye", [circle(0.58, -0.48, 0.07)]),
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
            ("head", [ellipse(0.45, 0, 0.27, 0.3)]),
            ("gill", [rect(0.26, -0.16, 0.33, 0.16)]),
            ("eye", [circle(0.5, -0.1, 0.09)]),
            ("mouth", [tri((0.56, 0.06), (0.8, 0.0), (0.78, 0.17))]),
        ],
    ),
    "tree": (
        "plant",
        [
            ("root", [tri((-0.15, 0.8), (-0.5, 1), (0.5, 1), (0.15, 0.8))]),
            ("trunk", [rect(-0.15, 0.0, 0.15, 0.9)]),
            ("crown", [ellipse(0, -0.35, 0.75, 0.6)]),
            ("branch", [tri((0.05, -0.05), (0.45, -0.5), (0.53, -0.43), (0.13, 0.03))]),
            ("leaf", [ellipse(0.32, 0.45, 0.2, 0.08)]),
            ("fruit", [circle(-0.35, -0.3, 0.11), circle(0.3, -0.5, 0.11), circle(0.1, -0.05, 0.11)]),
        ],
    ),
    "flower": (
        "plant",
        [
            ("root", [tri((-0.05, 0.85), (-0.35, 1), (0.35, 1), (0.05, 0.85))]),
            ("stem", [rect(-0.05, -0.1, 0.05, 0.9)]),
            ("bud", [ellipse(0.28, 0.05, 0.08, 0.13)]),
            ("leaf", [ellipse(-0.25, 0.5, 0.22, 0.09), ellipse(0.25, 0.3, 0.22, 0.09)]),
            (
                "petal",
                [
                    circle(0.28 * np.cos(a), -0.45 + 0.28 * np.sin(a), 0.17)
                    for a in np.linspace(0, 2 * np.pi, 6)[:-1]
                ],
            ),
            ("pistil", [circle(0, -0.45, 0.14)]),
            ("sepal", [tri((-0.2, -0.12), (0.2, -0.12), (0, 0.05))]),
        ],
    ),
    "lamp": (
        "furniture",
        [
            ("base", [ellipse(0, 0.88, 0.45, 0.12)]),
            ("pole", [rect(-0.06, -0.35, 0.06, 0.85)]),
            ("switch", [rect(0.06, 0.15, 0.2, 0.3)]),
            ("bulb", [circle(0, -0.22, 0.14)]),
            ("shade", [tri((-0.3, -0.85), (0.3, -0.85), (0.55, -0.3), (-0.55, -0.3))]),
            ("finial", [circle(0, -0.93, 0.08)]),
        ],
    ),
    "table": (
        "furniture",
        [
            ("shelf", [rect(-0.72, 0.5, 0.72, 0.62)]),
            ("leg", [rect(-0.85, -0.1, -0.7, 0.9), rect(0.7, -0.1, 0.85, 0.9)]),
            ("foot", [rect(-0.9, 0.86, -0.65, 0.98), rect(0.65, 0.86, 0.9, 0.98)]),
            ("tabletop", [rect(-1, -0.25, 1, -0.05)]),
            ("drawer", [rect(-0.35, -0.05, 0.35, 0.2)]),
            ("knob", [circle(0, 0.075, 0.07)]),
        ],
    ),
    "chair": (
        "furniture",
        [
            ("backrest", [rect(-0.5, -0.95, -0.32, 0.1)]),
            ("headrest", [rect(-0.56, -1.02, -0.26, -0.88)]),
            ("crossbar", [rect(-0.38, 0.5, 0.38, 0.58)]),
            ("leg", [rect(-0.5, 0.1, -0.38, 0.9), rect(0.38, 0.1, 0.5, 0.9)]),
            ("foot", [rect(-0.55, 0.86, -0.33, 0.98), rect(0.33, 0.86, 0.55, 0.98)]),
            ("seat", [rect(-0.55, -0.02, 0.55, 0.15)]),
            ("armrest", [rect(-0.5, -0.4, 0.3, -0.3), rect(0.2, -0.4, 0.3, -0.02)]),
        ],
    ),
    "bottle": (
        "container",
        [
            ("body", [rect(-0.35, -0.2, 0.35, 0.95), ellipse(0, -0.2, 0.35, 0.15)]),
            ("neck", [rect(-0.13, -0.7, 0.13, -0.25)]),
            ("lip", [rect(-0.17, -0.73, 0.17, -0.63)]),
            ("cap", [rect(-0.16, -0.9, 0.16, -0.7)]),
            ("base", [rect(-0.35, 0.82, 0.35, 0.95)]),
            ("label", [rect(-0.35, 0.15, 0.35, 0.55)]),
            ("logo", [circle(0, 0.35, 0.12)]),
        ],
    ),
}

# The large parts an object is recognised by: every image shows at least one of them. Any part may be absent.
LARGE_PARTS = {
    "car": ("body", "wheel"),
    "truck": ("cab", "cargo box"),
    "bus": ("body", "window"),
    "bicycle": ("frame", "wheel"),
    "house": ("wall", "roof"),
    "barn": ("wall", "roof"),
    "lighthouse": ("tower", "lantern"),
    "cat": ("body", "head"),
    "dog": ("body", "head"),
    "bird": ("body", "head"),
    "fish": ("body", "tail"),
    "tree": ("crown", "trunk"),
    "flower": ("petal", "stem"),
    "lamp": ("shade", "pole"),
    "table": ("tabletop", "leg"),
    "chair": ("seat", "backrest"),
    "bottle": ("body", "neck"),
}
# A part drawn on another one is absent whenever that one is.
DRAWN_ON = {
    "eye": "head",
    "ear": "head",
    "nose": "head",
    "beak": "head",
    "gill": "head",
    "fruit": "crown",
    "pistil": "petal",
    "handle": "door",
    "beam": "door",
    "knob": "drawer",
    "logo": "label",
}


def _random_colour(rng) -> np.ndarray:
    hue, saturation, value = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255


def _distinct_colour(rng, used: list[np.ndarray], tries: int = 32) -> np.ndarray:
    """A random colour at least `MIN_COLOUR_DISTANCE` from every colour in `used` (the last try otherwise)."""
    for _ in range(tries):
        colour = _random_colour(rng)
        if all(np.linalg.norm(colour - other) >= MIN_COLOUR_DISTANCE for other in used):
            break
    return colour


def min_present_parts(object_name: str) -> int:
    """How many parts an image of the object shows at least: 2 for objects of up to 4 parts, else 3."""
    return 2 if len(OBJECTS[object_name][1]) <= 4 else 3


def _consistent(object_name: str, present) -> set[str]:
    """`present` without the parts drawn on an absent part."""
    present = set(present)
    return {name for name in present if DRAWN_ON.get(name, name) in present | {name}}


def recognisable(object_name: str, present) -> bool:
    """One of the object's `LARGE_PARTS` and at least `min_present_parts` parts are there."""
    return bool(set(present) & set(LARGE_PARTS[object_name])) and len(present) >= min_present_parts(
        object_name
    )


def sample_present_parts(object_name: str, rng) -> list[str]:
    """The parts drawn in one image: each part independently absent with `ABSENT_PROBABILITY`, or because the part it
    is drawn on is absent; drawn again until the object is `recognisable`."""
    names = [name for name, _ in OBJECTS[object_name][1]]
    while True:
        present = _consistent(object_name, [name for name in names if rng.random() >= ABSENT_PROBABILITY])
        if recognisable(object_name, present):
            return [name for name in names if name in present]


def _label_map(object_name: str, present: list[str], pose, size: int) -> np.ndarray:
    """`(size, size)` int32: 1 + the index (in `OBJECTS` order) of the part drawn on top at each pixel, 0 outside."""
    half_extent, centre, rotation, mirror = pose
    label_map = Image.new("I", (size, size), 0)
    painter = ImageDraw.Draw(label_map)
    for index, (name, shapes) in enumerate(OBJECTS[object_name][1], start=1):
        if name not in present:
            continue
        for shape in shapes:
            points = np.asarray(shape, dtype=np.float64) * [mirror, 1.0]
            points = points @ rotation.T * half_extent + centre
            painter.polygon([tuple(p) for p in points], fill=index)
    return np.asarray(label_map, dtype=np.int32)


def draw_object(
    object_name: str, rng, size: int = DEFAULT_IMAGE_SIZE, present: list[str] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draws one object with the parts in `present` (default: `sample_present_parts`). Returns the RGB image
    (size × size × 3, uint8) and part name → visible mask, for exactly the parts that can be seen."""
    _, parts = OBJECTS[object_name]
    index = {name: i for i, (name, _) in enumerate(parts, start=1)}
    half_extent = rng.uniform(*SCALE) * size
    centre = size / 2 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, size=2) * size
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pose = (half_extent, centre, rotation, mirror)
    given = present is not None
    wanted = list(present) if given else sample_present_parts(object_name, rng)
    while True:
        present = wanted
        while (
            True
        ):  # a part hidden below MIN_PART_PIXELS by the parts over it is not drawn, nor what is on it
            labels = _label_map(object_name, present, pose, size)
            kept = _consistent(
                object_name, [n for n in present if (labels == index[n]).sum() >= MIN_PART_PIXELS]
            )
            if kept == set(present):
                break
            present = [n for n in present if n in kept]
        if given or recognisable(object_name, present):
            break
        wanted = sample_present_parts(object_name, rng)  # too little left to tell the object: other parts

    background = _random_colour(rng)
    image = np.broadcast_to(background, (size, size, 3)) + rng.normal(0, 14, (size, size, 3))
    part_masks, used = {}, [background]
    for name in present:
        mask = labels == index[name]
        part_masks[name] = mask
        colour = _distinct_colour(rng, used)
        used.append(colour)
        shade = rng.normal(0, 8, (size, size, 1))
        image = np.where(mask[..., None], colour + shade, image)
    return np.clip(image, 0, 255).astype(np.uint8), part_masks


def draw(
    index: int, seed: int = 42, size: int = DEFAULT_IMAGE_SIZE
) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Image `index` of the toy drawn with `seed`: its object, RGB image and part masks. Object classes cycle, so that
    every class gets the same number of images; everything else comes from a generator of (seed, index)."""
    names = sorted(OBJECTS)
    object_name = names[index % len(names)]
    image, part_masks = draw_object(object_name, np.random.default_rng([seed, index]), size)
    return object_name, image, part_masks


def jpeg(image: np.ndarray) -> bytes:
    """The image as the dataset stores it. JPEG: the noisy background makes PNGs ~6x larger, and the dataset stores
    one image per question."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def generate(out_dir, num_images: int, seed: int = 42, size: int = DEFAULT_IMAGE_SIZE) -> list[Instance]:
    """Draws `num_images` images (`draw`) into `out_dir` (JPEG) and returns their instances."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    instances = []
    for index in tqdm(range(num_images), desc="drawing toy images", leave=False):
        object_name, image, part_masks = draw(index, seed, size)
        image_id = f"toy_{index:06d}"
        path = out_dir / f"{image_id}.jpg"
        atomic.write_bytes(path, jpeg(image))
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
