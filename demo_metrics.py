"""`make demo-metrics`: the gIoU metric on the real Pascal-Part examples in ../shared/real-data/.

Predictions are perturbed copies of the real part masks (shifted, eroded, dilated, the whole object for every
part, nothing), so the table shows how the metric reacts to each kind of error on real masks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import evaluate
import numpy as np
from scipy import ndimage

from partonomy_dataset import masks
from partonomy_dataset.instances import ReadStats
from partonomy_dataset.sources import pascal_part

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "shared" / "real-data" / "pascal-part"


def shift(mask, pixels):
    return ndimage.shift(mask.astype(np.uint8), (pixels, pixels), order=0, mode="constant").astype(bool)


PERTURBATIONS = {
    "exact copy": lambda m, obj: m,
    "shifted 3 px": lambda m, obj: shift(m, 3),
    "shifted 10 px": lambda m, obj: shift(m, 10),
    "eroded 2 px": lambda m, obj: ndimage.binary_erosion(m, iterations=2),
    "dilated 3 px": lambda m, obj: ndimage.binary_dilation(m, iterations=3),
    "whole object": lambda m, obj: obj,
    "empty": lambda m, obj: np.zeros_like(m),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pascal-part-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()

    stats = ReadStats()
    instances = pascal_part.read_dir(args.pascal_part_dir, stats)
    num_masks = sum(len(inst.parts) for inst in instances)
    print(
        f"{len(instances)} real Pascal-Part objects ({num_masks} part masks) from {stats.files} files; "
        f"skipped: {dict(stats.skipped)}"
    )
    giou = evaluate.load(str(Path(__file__).resolve().parent / "metrics" / "giou"))

    references = [list(inst.parts.values()) for inst in instances]
    labels = [list(inst.parts) for inst in instances]
    dense = [[masks.decode(r) for r in refs] for refs in references]
    objects = [masks.decode(inst.object_mask) for inst in instances]

    print(f"\n{'prediction':<16} {'matching':<10} {'micro-gIoU':>10} {'macro-gIoU':>10} {'cIoU':>7}")
    for name, perturb in PERTURBATIONS.items():
        predictions = [[perturb(m, obj) for m in image] for image, obj in zip(dense, objects)]
        for matching in ("paired", "hungarian", "union") if name == "shifted 10 px" else ("paired",):
            result = giou.compute(
                predictions=predictions,
                references=references,
                prediction_labels=labels,
                reference_labels=labels,
                matching=matching,
            )
            print(
                f"{name:<16} {matching:<10} {result['micro_giou']:>10.3f} {result['macro_giou']:>10.3f} "
                f"{result['ciou']:>7.3f}"
            )


if __name__ == "__main__":
    main()
