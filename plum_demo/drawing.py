"""Pictures of part masks, shared by `make demo`'s overlays, the app and the docs.

    from plum_demo.drawing import draw_masks
    picture = draw_masks(image, masks, ["wheel", "door"])      # PIL image: outlines and names on a grey copy

Masks are drawn as outlines (with a light tint inside) on a desaturated copy of the image, so that a part's colour is
the legend's colour whatever the image's own colours, and overlapping masks stay readable; names are written in a
TrueType font (Pillow's own, no system font needed) in the mask's colour on a dark box.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

COLOURS = [  # Sasha Trubetskoy's distinct colours
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
LINE_COLOURS = (0, 1, 3, 5, 4)  # the palette's darker colours, readable as lines on white
TINT = 0.25  # how much of a mask's colour fills its inside
OUTLINE = 2  # outline width in display pixels
FONT_SIZE = 13
ROW = 20  # legend row height


def colour(index: int) -> tuple[int, int, int]:
    return COLOURS[index % len(COLOURS)]


def hex_colour(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour(index))


def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _mask_array(mask, size: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) array from a bool / uint8 array or tensor, checked against the image size (W, H)."""
    array = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask).astype(bool)
    if array.shape != (size[1], size[0]):
        raise ValueError(f"a mask of shape {array.shape} does not fit an image of {size[0]}x{size[1]}")
    return array


def desaturated(image: Image.Image, scale: int = 1) -> Image.Image:
    """A light grey copy of the image at `scale` times its size: the background masks are drawn on."""
    grey = image.convert("L").point(lambda v: 90 + v * 0.55)
    if scale != 1:
        grey = grey.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return grey.convert("RGB")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary, `OUTLINE` pixels wide, inside the mask."""
    picture = Image.fromarray(mask.astype(np.uint8) * 255)
    inner = np.asarray(picture.filter(ImageFilter.MinFilter(2 * OUTLINE + 1))) > 0
    return mask & ~inner


def draw_masks(image: Image.Image, masks, labels: list[str] | None = None, scale: int = 1) -> Image.Image:
    """The image, desaturated and `scale` times larger, with each mask outlined in its colour (`colour(k)`), lightly
    tinted inside, and with `labels` its name written at its centre."""
    image = image.convert("RGB")
    arrays = [_mask_array(m, image.size) for m in masks]
    canvas = np.asarray(desaturated(image, scale), dtype=np.float32).copy()
    big = [np.kron(m, np.ones((scale, scale), dtype=bool)) if scale != 1 else m for m in arrays]
    for k, mask in enumerate(big):
        canvas[mask] = (1 - TINT) * canvas[mask] + TINT * np.array(colour(k), dtype=np.float32)
    for k, mask in enumerate(big):
        canvas[_outline(mask)] = colour(k)
    result = Image.fromarray(canvas.astype(np.uint8))
    if labels:
        draw, taken = ImageDraw.Draw(result), []
        for k, (mask, label) in enumerate(zip(big, labels)):
            if mask.any():
                _label(draw, _label_anchor(mask), label, colour(k), taken)
    return result


def _label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """The mask's pixel farthest from its border: a label there sits inside the part, even for a ring or an L."""
    from scipy.ndimage import distance_transform_edt

    y, x = np.unravel_index(np.argmax(distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]), mask.shape)
    return int(x), int(y)


def _label(draw: ImageDraw.ImageDraw, anchor, text: str, fill, taken: list):
    """`text` on a dark box at `anchor`, moved down (then up) by its own height until it overlaps no label in
    `taken`, the boxes already drawn; its box is added to them."""
    width, height = draw.im.size
    box = draw.textbbox(anchor, text, font=font(), anchor="mm")
    step = box[3] - box[1] + 6
    for shift in (0, 1, -1, 2, -2, 3, -3, 4, -4):
        moved = (box[0] - 3, box[1] - 2 + shift * step, box[2] + 3, box[3] + 2 + shift * step)
        inside = moved[1] >= 0 and moved[3] <= height
        if inside and not any(_overlap(moved, other) for other in taken):
            break
    draw.rectangle(moved, fill=(20, 20, 20))
    draw.text(
        ((moved[0] + moved[2]) / 2, (moved[1] + moved[3]) / 2), text, fill=fill, font=font(), anchor="mm"
    )
    taken.append(moved)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def iou(prediction, truth) -> float:
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    union = np.logical_or(prediction, truth).sum()
    return float(np.logical_and(prediction, truth).sum() / union) if union else 1.0


def compare(
    image: Image.Image, truth, prediction, parts: list[str], scale: int = 3, lines: list[str] | None = None
) -> Image.Image:
    """Three panels (the image, the ground truth, the prediction), a legend (each part's colour, name and IoU) and
    `lines` of text under it (the question, the correct answer, the model's pick ...)."""
    image = image.convert("RGB")
    panels = [image.resize((image.width * scale, image.height * scale), Image.NEAREST)]
    panels += [draw_masks(image, truth, scale=scale), draw_masks(image, prediction, scale=scale)]
    width, height = panels[0].size
    lines = lines or []
    legend = ROW * (1 + len(parts))
    canvas = Image.new("RGB", (3 * width, height + legend + ROW * len(lines) + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (panel, name) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
        canvas.paste(panel, (i * width, 0))
        draw.text((i * width + 4, height + 3), name, fill="black", font=font())
    for k, part in enumerate(parts):
        y = height + ROW * (k + 1)
        draw.rectangle([6, y + 4, 18, y + 16], fill=colour(k))
        value = iou(prediction[k], truth[k]) if k < len(prediction) else 0.0
        draw.text((26, y + 3), f"{part}   IoU {value:.2f}", fill="black", font=font())
    for j, line in enumerate(lines):
        draw.text((6, height + legend + ROW * j + 3), line, fill="black", font=font())
    return canvas


def line_chart(
    series: dict[str, list[tuple[float, float]]], title: str, x_label: str, y_label: str, size=(620, 380)
):
    """A small line chart (PIL only): each series as (x, y) points, y in [0, 1]; the x ticks fall on the points of the
    first series (e.g. the minutes at which a learning curve was evaluated)."""
    width, height = size
    left, right, top, bottom = 56, 130, 44, 44
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 8), title, fill="black", font=font(14))
    points = [p for values in series.values() for p in values]
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def position(x, y):
        return left + plot_w * x / x_max, top + plot_h * (1 - y)

    for tick in np.linspace(0, 1, 6):
        _, y = position(0, tick)
        draw.line([left, y, left + plot_w, y], fill=(225, 225, 225))
        draw.text((left - 30, y - 7), f"{tick:.1f}", fill="black", font=font())
    first = next(iter(series.values()), [])
    for x, _ in first:
        px, _ = position(x, 0)
        draw.text((px - 8, top + plot_h + 6), f"{x:.1f}", fill="black", font=font())
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for k, (name, values) in enumerate(series.items()):
        ink = colour(LINE_COLOURS[k % len(LINE_COLOURS)])
        xy = [position(x, y) for x, y in values]
        if len(xy) > 1:
            draw.line(xy, fill=ink, width=2)
        for cx, cy in xy:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=ink)
        draw.text((left + plot_w + 10, top + ROW * k), name, fill=ink, font=font())
    draw.text((left + plot_w // 2 - 40, height - 22), x_label, fill="black", font=font())
    draw.text((8, top - 20), y_label, fill="black", font=font())
    return canvas


def trade_off_chart(points: list[dict], size=(620, 400)) -> Image.Image:
    """Fig. 5b's trade-off: micro-gIoU (y) against text retention (x), one point per KL weight (λ_KL) with its 95 %
    intervals as error bars and a legend of the weights (the bundled font has no Greek letters). `points`: dicts with `kl_loss_weight` and `micro_giou` / `retention` as {mean, low, high}."""
    width, height = size
    left, right, top, bottom = 60, 30, 44, 50
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (8, 8),
        "micro-gIoU against text retention, one point per KL weight (95 % intervals)",
        fill="black",
        font=font(14),
    )
    xs = [v for p in points for v in (p["retention"]["low"], p["retention"]["high"])] or [0.0, 1.0]
    ys = [v for p in points for v in (p["micro_giou"]["low"], p["micro_giou"]["high"])] or [0.0, 1.0]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = min(ys) - 0.05, max(ys) + 0.05
    plot_w, plot_h = width - left - right, height - top - bottom

    def position(x, y):
        return left + plot_w * (x - x0) / (x1 - x0), top + plot_h * (1 - (y - y0) / (y1 - y0))

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in np.linspace(y0, y1, 5):
        draw.text((8, position(x0, tick)[1] - 7), f"{tick:.2f}", fill="black", font=font())
    for tick in np.linspace(x0, x1, 5):
        draw.text((position(tick, y0)[0] - 12, top + plot_h + 6), f"{tick:.2f}", fill="black", font=font())
    for k, point in enumerate(points):
        g, r = point["micro_giou"], point["retention"]
        ink = colour(LINE_COLOURS[k % len(LINE_COLOURS)])
        cx, cy = position(r["mean"], g["mean"])
        draw.line([position(r["low"], g["mean"]), position(r["high"], g["mean"])], fill=ink, width=2)
        draw.line([position(r["mean"], g["low"]), position(r["mean"], g["high"])], fill=ink, width=2)
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=ink)
        # a legend row per point (labels beside points collide when the points are close)
        ly = top + 8 + k * ROW
        draw.ellipse([left + 10, ly + 3, left + 18, ly + 11], fill=ink)
        draw.text((left + 24, ly), f"KL weight {point['kl_loss_weight']:g}", fill="black", font=font())
    draw.text(
        (left + plot_w // 2 - 110, height - 22),
        "text retention (naming accuracy after / before)",
        fill="black",
        font=font(),
    )
    draw.text((8, top - 20), "micro-gIoU", fill="black", font=font())
    return canvas
