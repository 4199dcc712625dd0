"""Drawing code shared by `make demo` (overlay PNGs, the learning curve) and `app.py`: part masks in distinct colours
with their names, ground truth beside prediction with the per-part IoU in the legend, and a small line chart."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]
ALPHA = 0.55  # how much of a mask's colour covers the image
LEGEND_ROW = 16


def colour(index: int) -> tuple[int, int, int]:
    return COLOURS[index % len(COLOURS)]


def hex_colour(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour(index))


def _font():
    return ImageFont.load_default()


def _mask_array(mask, size: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) array from a bool / uint8 array or tensor, checked against the image size (W, H)."""
    array = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask).astype(bool)
    if array.shape != (size[1], size[0]):
        raise ValueError(f"a mask of shape {array.shape} does not fit an image of {size[0]}x{size[1]}")
    return array


def overlay(image: Image.Image, masks, labels: list[str] | None = None, scale: int = 1) -> Image.Image:
    """The image with each mask painted in its colour and, with `labels`, its name written at the mask's centre."""
    image = image.convert("RGB")
    base = np.asarray(image, dtype=np.float32)
    painted = base.copy()
    arrays = [_mask_array(m, image.size) for m in masks]
    for k, mask in enumerate(arrays):
        painted[mask] = (1 - ALPHA) * painted[mask] + ALPHA * np.array(colour(k), dtype=np.float32)
    result = Image.fromarray(painted.astype(np.uint8))
    if scale != 1:
        result = result.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if labels:
        draw = ImageDraw.Draw(result)
        for k, (mask, label) in enumerate(zip(arrays, labels)):
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            x, y = int(xs.mean() * scale), int(ys.mean() * scale)
            left, top, right, bottom = draw.textbbox((x, y), label, font=_font(), anchor="mm")
            draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=(0, 0, 0))
            draw.text((x, y), label, fill=colour(k), font=_font(), anchor="mm")
    return result


def iou(prediction, truth) -> float:
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    union = np.logical_or(prediction, truth).sum()
    return float(np.logical_and(prediction, truth).sum() / union) if union else 1.0


def ground_truth_beside_prediction(
    image: Image.Image, truth, prediction, parts: list[str], scale: int = 3, title: str | None = None
) -> Image.Image:
    """Three panels (image, ground truth, prediction) and a legend: each part's colour, name and IoU."""
    image = image.convert("RGB")
    panels = [
        image.resize((image.width * scale, image.height * scale), Image.NEAREST),
        overlay(image, truth, scale=scale),
        overlay(image, prediction, scale=scale),
    ]
    width, height = panels[0].size
    header = LEGEND_ROW if title else 0
    ious = [iou(p, t) for p, t in zip(prediction, truth)]
    canvas = Image.new("RGB", (3 * width, header + height + LEGEND_ROW * (len(parts) + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=_font())
    for i, (panel, name) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
        canvas.paste(panel, (i * width, header))
        draw.text((i * width + 4, header + height + 2), name, fill="black", font=_font())
    for k, (part, value) in enumerate(zip(parts, ious)):
        y = header + height + LEGEND_ROW * (k + 1)
        draw.rectangle([4, y + 3, 14, y + 13], fill=colour(k))
        draw.text((20, y + 2), f"{part}   IoU {value:.2f}", fill="black", font=_font())
    return canvas


def line_chart(
    points: list[tuple[float, float]], title: str, x_label: str, y_label: str, size=(560, 360)
) -> Image.Image:
    """A small line chart (PIL only, no plotting library): `points` as (x, y), y in [0, 1]."""
    width, height = size
    left, right, top, bottom = 52, 16, 44, 40
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill="black", font=_font())
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def position(x, y):
        return left + plot_w * x / x_max, top + plot_h * (1 - y)

    for tick in np.linspace(0, 1, 6):
        _, y = position(0, tick)
        draw.line([left, y, width - right, y], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{tick:.1f}", fill="black", font=_font())
    for tick in np.linspace(0, x_max, 6):
        x, _ = position(tick, 0)
        draw.text((x - 8, height - bottom + 6), f"{tick:.1f}", fill="black", font=_font())
    draw.rectangle([left, top, width - right, top + plot_h], outline="black")
    if len(points) > 1:
        draw.line([position(x, y) for x, y in points], fill=colour(3), width=2)
    for x, y in points:
        cx, cy = position(x, y)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour(3))
    draw.text((left + plot_w // 2 - 30, height - 18), x_label, fill="black", font=_font())
    draw.text((8, top - 18), y_label, fill="black", font=_font())
    return canvas
