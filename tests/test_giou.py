"""gIoU: hand-computed cases for every matching and empty policy, LISA's formula, properties, real masks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils
from scipy import ndimage

from metrics.giou import compute_giou


def row(*intervals, width=20):
    """A 1 x width mask with the given [start, end) intervals set."""
    mask = np.zeros((1, width), dtype=bool)
    for start, end in intervals:
        mask[0, start:end] = True
    return mask


def rle_str(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


# IoU matrix (refs x preds) = [[1/2, 2/5], [4/9, 0]]: greedy takes R1-P1 first, Hungarian R1-P2 + R2-P1.
R1, R2 = row((0, 10)), row((1, 5), (10, 14))
P1, P2 = row((0, 5)), row((6, 10))


@pytest.mark.parametrize(
    "matching, micro, ciou",
    [
        ("paired", (1 / 2 + 0) / 2, (5 + 0) / (10 + 12)),
        ("greedy", (1 / 2 + 0) / 2, (5 + 0) / (10 + 8)),  # R2 left unmatched: union = its own area
        ("hungarian", (2 / 5 + 4 / 9) / 2, (4 + 4) / (10 + 9)),
        ("union", 9 / 14, 9 / 14),
    ],
)
def test_hand_computed_matchings(matching, micro, ciou):
    result = compute_giou([[P1, P2]], [[R1, R2]], matching=matching)
    assert result["micro_giou"] == pytest.approx(micro)
    assert result["macro_giou"] == pytest.approx(micro)
    assert result["ciou"] == pytest.approx(ciou)
    assert result["num_images"] == 1
    assert result["num_masks"] == (1 if matching == "union" else 2)


def test_paired_by_label_ignores_order_case_and_whitespace():
    result = compute_giou(
        [[P2, P1]], [[R1, R2]], prediction_labels=[["Tail ", "WING"]], reference_labels=[["wing", "tail"]]
    )
    # wing: P1 vs R1 = 1/2, tail: P2 vs R2 = 0
    assert result["micro_giou"] == pytest.approx(0.25)
    swapped = compute_giou(
        [[P2, P1]], [[R1, R2]], prediction_labels=[["wing", "tail"]], reference_labels=[["wing", "tail"]]
    )
    assert swapped["micro_giou"] == pytest.approx((2 / 5 + 4 / 9) / 2)


def test_reference_without_prediction_scores_zero_and_extra_predictions_are_counted():
    missing = compute_giou([[R1]], [[R1, R2]])
    assert missing["micro_giou"] == pytest.approx(0.5)
    assert missing["ciou"] == pytest.approx(10 / (10 + 8))
    by_label = compute_giou([[R1, P2]], [[R1]], prediction_labels=[["a", "b"]], reference_labels=[["a"]])
    assert by_label["micro_giou"] == 1.0
    assert by_label["num_unmatched_predictions"] == 1
    nothing = compute_giou([[]], [[R1, R2]], matching="greedy")
    assert nothing["micro_giou"] == 0.0 and nothing["num_masks"] == 2


@pytest.mark.parametrize("matching", ["paired", "greedy", "hungarian", "union"])
def test_empty_policy(matching):
    empty = row()
    one = compute_giou([[empty]], [[empty]], matching=matching, empty_policy="one")
    assert (one["micro_giou"], one["num_masks"]) == (1.0, 1)
    skip = compute_giou([[empty], [R1]], [[empty], [R1]], matching=matching, empty_policy="skip")
    assert (skip["micro_giou"], skip["num_masks"], skip["num_images"]) == (1.0, 1, 1)
    # An empty reference against a non-empty prediction is a real 0 under both policies.
    wrong = compute_giou([[R1]], [[empty]], matching="paired", empty_policy="skip")
    assert (wrong["micro_giou"], wrong["num_masks"]) == (0.0, 1)


def test_micro_weights_masks_and_macro_weights_images():
    result = compute_giou([[R1], [P2, P2, P2]], [[R1], [R1, R2, R2]])
    # image 0: one mask, IoU 1; image 1: IoUs 2/5, 0, 0
    assert result["micro_giou"] == pytest.approx((1 + 2 / 5) / 4)
    assert result["macro_giou"] == pytest.approx((1 + (2 / 5) / 3) / 2)


def lisa_giou(predictions, references):
    """LISA's validate(): per-mask IoU = I / (U + 1e-5), +1 where the union is empty; cIoU = sum I / sum U."""
    ious, inter_sum, union_sum = [], 0, 0
    for preds, refs in zip(predictions, references):
        for p, r in zip(preds, refs):
            inter, union = np.logical_and(p, r).sum(), np.logical_or(p, r).sum()
            ious.append(inter / (union + 1e-5) + (1.0 if union == 0 else 0.0))
            inter_sum += inter
            union_sum += union
    return float(np.mean(ious)), inter_sum / (union_sum + 1e-10)


def test_reproduces_lisa_on_random_masks():
    rng = np.random.default_rng(0)
    predictions, references = [], []
    for _ in range(25):
        h, w = rng.integers(5, 40, size=2)
        n = rng.integers(1, 5)
        references.append([rng.random((h, w)) < rng.uniform(0, 0.6) for _ in range(n)])
        predictions.append([rng.random((h, w)) < rng.uniform(0, 0.6) for _ in range(n)])
    references[3][0][:] = False
    predictions[3][0][:] = False  # an empty pair: LISA counts it as 1
    micro, ciou = lisa_giou(predictions, references)
    result = compute_giou(predictions, [[rle_str(m) for m in image] for image in references])
    assert result["micro_giou"] == pytest.approx(micro, abs=1e-4)
    assert result["ciou"] == pytest.approx(ciou, abs=1e-9)


masks_2d = st.integers(1, 12).flatmap(
    lambda h: st.integers(1, 12).flatmap(
        lambda w: st.tuples(arrays(np.bool_, (h, w)), arrays(np.bool_, (h, w)))
    )
)


@settings(max_examples=60, deadline=None)
@given(masks_2d)
def test_properties(pair):
    a, b = pair
    same = compute_giou([[a]], [[a]])
    assert same["micro_giou"] == 1.0
    ab, ba = compute_giou([[a]], [[b]]), compute_giou([[b]], [[a]])
    assert ab["micro_giou"] == pytest.approx(ba["micro_giou"])
    assert 0.0 <= ab["micro_giou"] <= 1.0 and 0.0 <= ab["ciou"] <= 1.0
    union = np.logical_or(a, b).sum()
    expected = 1.0 if union == 0 else np.logical_and(a, b).sum() / union
    assert ab["micro_giou"] == pytest.approx(expected)
    for matching in ("paired", "greedy", "hungarian", "union"):
        dense = compute_giou([[a, b]], [[b, a]], matching=matching)
        rle = compute_giou([[rle_str(a), rle_str(b)]], [[rle_str(b), rle_str(a)]], matching=matching)
        tensors = compute_giou(
            [[torch.from_numpy(a), torch.from_numpy(b)]], [[b.astype(np.uint8), a]], matching=matching
        )
        assert dense == rle == tensors


def test_accepts_bytes_and_uncompressed_rle():
    mask = row((3, 9))
    compressed = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    uncompressed = {"size": [1, 20], "counts": [3, 6, 11]}
    assert compute_giou([[compressed]], [[uncompressed]])["micro_giou"] == 1.0


def test_size_mismatch_names_image_and_sizes():
    with pytest.raises(
        ValueError, match=r"image 1: prediction 0 has size 1x19 but reference 0 has size 1x20"
    ):
        compute_giou([[R1], [row(width=19)]], [[R1], [R2]])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"size": [1, 20]}, "needs 'size' and 'counts'"),
        ({"size": [1], "counts": "0"}, "'size' must be"),
        ({"size": [1, 20], "counts": 5}, "'counts' must be"),
        ({"size": [1, 20], "counts": "?"}, "runs cover 15 pixels"),  # '?' = one run of 15 pixels
        ({"size": [1, 20], "counts": "0b"}, "do not decode"),  # a dangling continuation chunk
        ({"size": [1, 20], "counts": "0 !"}, "do not decode"),  # characters outside the alphabet
        ({"size": [1, 20], "counts": [3, 6]}, "sum to 9"),
        ({"size": [1, 20], "counts": ""}, "do not decode"),
    ],
)
def test_malformed_rle_names_the_image(bad, message):
    with pytest.raises(ValueError, match=f"image 2: .*{message}"):
        compute_giou([[R1], [R1], [R1]], [[R1], [R1], [bad]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="matching must be one of"):
        compute_giou([[R1]], [[R1]], matching="best")
    with pytest.raises(ValueError, match="empty_policy must be one of"):
        compute_giou([[R1]], [[R1]], empty_policy="half")
    with pytest.raises(ValueError, match="image 0: prediction 0 has dtype float"):
        compute_giou([[R1.astype(float)]], [[R1]])
    with pytest.raises(ValueError, match="predictions for 1 images but references for 2"):
        compute_giou([[R1]], [[R1], [R1]])


def test_real_pascal_part_masks(real_pascal_part_dir):
    from partonomy_dataset import masks
    from partonomy_dataset.sources import pascal_part

    instances = pascal_part.read_dir(real_pascal_part_dir)
    references = [[masks.decode(r) for r in inst.parts.values()] for inst in instances]
    assert sum(len(r) for r in references) > 50
    exact = compute_giou(references, [[masks.encode(m) for m in image] for image in references])
    assert exact["micro_giou"] == 1.0 and exact["ciou"] == 1.0

    eroded = [[ndimage.binary_erosion(m, iterations=2) for m in image] for image in references]
    result = compute_giou(eroded, references)
    # An eroded mask lies inside its reference, so its IoU is the ratio of the areas.
    ratios = [e.sum() / r.sum() for pe, pr in zip(eroded, references) for e, r in zip(pe, pr)]
    assert result["micro_giou"] == pytest.approx(np.mean(ratios))
    assert 0.2 < result["micro_giou"] < 0.9

    scores = []
    for pixels in (0, 2, 5, 15):
        shifted = [[np.roll(m, (pixels, pixels), axis=(0, 1)) for m in image] for image in references]
        scores.append(compute_giou(shifted, references)["micro_giou"])
    assert scores[0] == 1.0 and all(a > b for a, b in zip(scores, scores[1:]))


def test_the_reference_releases_three_empty_policies():
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    for policy, expected in (("one", 1.0), ("zero", 0.5), ("skip", 1.0)):
        result = compute_giou([[empty, full]], [[empty, full]], empty_policy=policy)
        assert result["micro_giou"] == pytest.approx(expected), policy
        assert result["num_masks"] == (1 if policy == "skip" else 2)


# ------------------------------------------------------------------------------------------- hostile inputs


def dense_giou(predictions, references):
    """The straightforward dense computation, paired in order: per-mask IoU, image means, cumulative I / U."""
    ious, image_means, total_i, total_u = [], [], 0, 0
    for image_predictions, image_references in zip(predictions, references):
        image_ious = []
        for p, r in zip(image_predictions, image_references):
            i, u = int(np.logical_and(p, r).sum()), int(np.logical_or(p, r).sum())
            image_ious.append(i / u if u else 1.0)
            total_i, total_u = total_i + i, total_u + u
        ious += image_ious
        image_means.append(np.mean(image_ious))
    return np.mean(ious), np.mean(image_means), total_i / total_u


@pytest.mark.parametrize("as_rle", [False, True])
def test_any_number_of_masks_on_one_image_is_exact(as_rle):
    """pycocotools' `area` sizes its result as uint8: 256 masks or more on one image used to raise OverflowError."""
    rng = np.random.default_rng(0)
    references = [
        [rng.random((12, 17)) > 0.6 for _ in range(300)],
        [rng.random((5, 9)) > 0.5 for _ in range(3)],
    ]
    predictions = [[r ^ (rng.random(r.shape) > 0.8) for r in image] for image in references]
    micro, macro, ciou = dense_giou(predictions, references)
    convert = rle_str if as_rle else (lambda m: m)
    result = compute_giou(
        [[convert(m) for m in image] for image in predictions],
        [[convert(m) for m in image] for image in references],
    )
    assert result["num_masks"] == 303 and result["num_images"] == 2
    assert result["micro_giou"] == pytest.approx(micro, abs=1e-12)
    assert result["macro_giou"] == pytest.approx(macro, abs=1e-12)
    assert result["ciou"] == pytest.approx(ciou, abs=1e-12)
    for matching in ("greedy", "hungarian", "union"):  # every matching gets through 300 masks
        assert 0 <= compute_giou(predictions, references, matching=matching)["micro_giou"] <= 1
    no_predictions = compute_giou([[], []], references)
    assert no_predictions["micro_giou"] == 0 and no_predictions["num_masks"] == 303


@pytest.mark.parametrize("size", [[8.7, 8.2], [8, 8.5], [True, 8], ["8", "8"], [float("nan"), 8]])
def test_non_integer_rle_sizes_are_refused_naming_the_image(size):
    mask = rle_str(np.ones((8, 8), dtype=bool))
    with pytest.raises(
        ValueError, match=r"image 1: reference 0 is a malformed RLE: 'size' must be \[height, width\]"
    ):
        compute_giou([[mask], [mask]], [[mask], [{**mask, "size": size}]])
    assert (
        compute_giou([[mask]], [[{**mask, "size": [8.0, 8.0]}]])["micro_giou"] == 1.0
    )  # integral floats are sizes
