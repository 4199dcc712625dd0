"""gIoU at Partonomy-val scale: RLE scoring (metrics/giou) against a straightforward dense numpy implementation.

Partonomy-val has 85,350 masks over 15,794 images (paper, Table 8). Masks are random star-shaped blobs on
375x500 images, predictions are jittered copies. Prints masks/s for the RLE path over the whole set, and the
ratio against the dense baseline measured side by side on the same images (the dense baseline decodes the
RLE inputs, then counts pixels with numpy; its time is also shown without the decode).

    python benchmarks/bench_giou.py [--images 15794] [--masks 85350] [--dense-images 1500]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_out_argument, write_results  # noqa: E402
from metrics.giou import compute_giou  # noqa: E402

HEIGHT, WIDTH = 375, 500


def blob(rng, cx, cy, radius, vertices=16):
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.6, 1.2, vertices)
    xs = np.clip(cx + radii * np.cos(angles), 0, WIDTH - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, HEIGHT - 1)
    polygon = np.stack([xs, ys], 1).ravel().tolist()
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], HEIGHT, WIDTH))
    rle["counts"] = rle["counts"].decode("ascii")  # the on-disk (json / parquet) form is a str
    return rle


def make_dataset(num_images, num_masks, seed=0):
    rng = np.random.default_rng(seed)
    per_image = np.full(num_images, num_masks // num_images)
    per_image[: num_masks - per_image.sum()] += 1
    predictions, references = [], []
    for count in tqdm(per_image, desc="drawing blobs"):
        refs, preds = [], []
        for _ in range(count):
            cx, cy = rng.uniform(60, WIDTH - 60), rng.uniform(60, HEIGHT - 60)
            radius = rng.uniform(15, 80)
            refs.append(blob(rng, cx, cy, radius))
            preds.append(
                blob(rng, cx + rng.normal(0, 8), cy + rng.normal(0, 8), radius * rng.uniform(0.8, 1.2))
            )
        predictions.append(preds)
        references.append(refs)
    return predictions, references


def dense_giou(dense_predictions, dense_references):
    """The straightforward implementation: per mask pair, logical and / or over the pixels."""
    ious, intersections, unions = [], 0, 0
    for preds, refs in zip(dense_predictions, dense_references):
        for p, r in zip(preds, refs):
            inter = np.logical_and(p, r).sum()
            union = np.logical_or(p, r).sum()
            ious.append(1.0 if union == 0 else inter / union)
            intersections += inter
            unions += union
    return float(np.mean(ious)), float(intersections / unions)


def decode(images):
    return [[mask_utils.decode(m).astype(bool) for m in masks] for masks in images]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=15794)
    parser.add_argument("--masks", type=int, default=85350)
    parser.add_argument(
        "--dense-images", type=int, default=1500, help="images scored by both implementations"
    )
    add_out_argument(parser, __file__)
    args = parser.parse_args()

    predictions, references = make_dataset(args.images, args.masks)
    num_masks = sum(len(r) for r in references)

    start = time.perf_counter()
    full = compute_giou(predictions, references)
    rle_seconds = time.perf_counter() - start
    print(
        f"RLE, whole set: {num_masks} masks / {args.images} images in {rle_seconds:.2f} s "
        f"= {num_masks / rle_seconds:,.0f} masks/s (micro-gIoU {full['micro_giou']:.4f})"
    )

    subset = slice(0, args.dense_images)
    sub_p, sub_r = predictions[subset], references[subset]
    sub_masks = sum(len(r) for r in sub_r)
    start = time.perf_counter()
    rle_sub = compute_giou(sub_p, sub_r)
    rle_sub_seconds = time.perf_counter() - start

    start = time.perf_counter()
    dense_p, dense_r = decode(sub_p), decode(sub_r)
    decode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dense_micro, dense_ciou = dense_giou(dense_p, dense_r)
    count_seconds = time.perf_counter() - start
    assert abs(dense_micro - rle_sub["micro_giou"]) < 1e-9 and abs(dense_ciou - rle_sub["ciou"]) < 1e-9
    dense_seconds = decode_seconds + count_seconds
    print(f"side by side on {sub_masks} masks ({args.dense_images} images), same numbers from both:")
    print(
        f"  RLE (pycocotools)          {rle_sub_seconds:7.2f} s  {sub_masks / rle_sub_seconds:10,.0f} masks/s"
    )
    print(
        f"  dense numpy, from RLE      {dense_seconds:7.2f} s  {sub_masks / dense_seconds:10,.0f} masks/s"
        f"  -> RLE is {dense_seconds / rle_sub_seconds:.1f}x faster"
    )
    print(
        f"  dense numpy, pre-decoded   {count_seconds:7.2f} s  {sub_masks / count_seconds:10,.0f} masks/s"
        f"  -> RLE is {count_seconds / rle_sub_seconds:.1f}x faster"
    )
    projected = dense_seconds * num_masks / sub_masks
    print(f"  dense baseline projected to the whole set: {projected:.0f} s")
    settings = {"images": args.images, "masks": args.masks, "dense_images": args.dense_images}
    write_results(
        args.out,
        settings,
        {
            "whole_set": {
                "masks": num_masks,
                "images": args.images,
                "seconds": rle_seconds,
                "masks_per_s": num_masks / rle_seconds,
                "micro_giou": full["micro_giou"],
            },
            "side_by_side": {
                "masks": sub_masks,
                "images": args.dense_images,
                "rle_seconds": rle_sub_seconds,
                "rle_masks_per_s": sub_masks / rle_sub_seconds,
                "dense_seconds": dense_seconds,
                "dense_masks_per_s": sub_masks / dense_seconds,
                "dense_predecoded_seconds": count_seconds,
                "dense_predecoded_masks_per_s": sub_masks / count_seconds,
                "rle_speedup": dense_seconds / rle_sub_seconds,
                "rle_speedup_predecoded": count_seconds / rle_sub_seconds,
            },
            "dense_projected_seconds": projected,
        },
    )


if __name__ == "__main__":
    main()
