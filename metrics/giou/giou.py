# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""gIoU (generalised / global IoU) for segmentation masks, as used by PARTONOMY, LISA and GLaMM.

The scoring logic is plain Python (`compute_giou`) so it can be used without `evaluate`; the `Giou` class
wraps it as an `evaluate` module (`evaluate.load("metrics/giou")`).

Masks are scored in COCO RLE space with pycocotools: RLE inputs are never decoded to dense arrays, dense
inputs are encoded once.
"""

from collections import defaultdict

import datasets
import evaluate
import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

logger = evaluate.logging.get_logger(__name__)

MATCHINGS = ("paired", "greedy", "hungarian", "union")
_CHECK_CHUNK = 1024  # RLEs validated per vectorised pass
_AREA_CHUNK = 255  # pycocotools' `area` sizes a uint8 array by the number of RLEs: at most 255 per call
EMPTY_POLICIES = ("one", "zero", "skip")  # the reference release's values
EMPTY_SCORES = {"one": 1.0, "zero": 0.0}  # the IoU of an empty prediction against an empty reference

_CITATION = """\
@article{blume2025partonomy,
  title={PARTONOMY: Large Multimodal Models with Part-Level Visual Understanding},
  author={Blume, Ansel and Kim, Jeonghwan and Ha, Hyeonjeong and Chatikyan, Elen and Jin, Xiaomeng and
          Nguyen, Khanh Duy and Peng, Nanyun and Chang, Kai-Wei and Hoiem, Derek and Ji, Heng},
  journal={arXiv preprint arXiv:2505.20759},
  year={2025}
}
"""

_DESCRIPTION = """\
gIoU scores predicted segmentation masks against reference masks. micro-gIoU is the mean IoU over every
reference mask of the dataset; macro-gIoU averages IoUs within each image first, then over images; cIoU is
the cumulative IoU (sum of intersections over sum of unions). Predictions are paired with references in
order, by part label, greedily by IoU (GLaMM), by the Hungarian algorithm, or scored as one union mask per
image. An empty prediction against an empty reference scores 1 (LISA's convention), 0 with `empty_policy="zero"`, or
is left out with `"skip"` (the reference release's three values); a reference without a prediction scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of masks): per image, the predicted masks. A mask is a COCO RLE dict
        (`{"size": [h, w], "counts": str | bytes | list[int]}`), or a 2-D bool / integer numpy array or torch
        tensor (non-zero = foreground).
    references (`list` of `list` of masks): per image, the reference masks, in the same formats.
    prediction_labels (`list` of `list` of `str`, *optional*): per image, a name for each predicted mask.
    reference_labels (`list` of `list` of `str`, *optional*): per image, a name for each reference mask.
        With both label lists, `paired` matching pairs masks by name (case and whitespace ignored).
    matching (`str`, defaults to `"paired"`): one of `paired`, `greedy`, `hungarian`, `union`.
    empty_policy (`str`, defaults to `"one"`): `one` scores an empty prediction against an empty reference
        as 1.0, `zero` as 0.0; `skip` leaves such pairs out of every average.
Returns:
    micro_giou (`float`): mean IoU over all scored reference masks, in [0, 1].
    macro_giou (`float`): mean over images of the per-image mean IoU, in [0, 1].
    ciou (`float`): sum of intersections / sum of unions over scored masks, in [0, 1].
    num_images (`int`): images with at least one scored reference mask.
    num_masks (`int`): scored reference masks (with `union` matching: one per image).
    num_unmatched_predictions (`int`): predictions that no reference was paired with (not penalised).
Examples:
    >>> import numpy as np
    >>> giou = evaluate.load("metrics/giou")
    >>> ref = np.zeros((4, 4), dtype=bool); ref[:2] = True
    >>> pred = np.zeros((4, 4), dtype=bool); pred[:1] = True
    >>> giou.compute(predictions=[[pred]], references=[[ref]])["micro_giou"]
    0.5
"""


# ----------------------------------------------------------------------------------------------------------
# Mask normalisation and validation
# ----------------------------------------------------------------------------------------------------------


def to_rle(mask, image_index=0, role="mask"):
    """Returns `mask` as a compressed COCO RLE dict `{"size": [h, w], "counts": bytes}`.

    Accepts a COCO RLE dict (compressed `str`/`bytes` counts or uncompressed `list` counts), a 2-D numpy
    array of bool / integer dtype, or a torch tensor. Raises `ValueError` naming `image_index` and `role`
    for anything else. Compressed counts are checked later, in bulk, by `check_rles`.
    """
    if type(mask) is dict:  # fast path for the common, well-formed case
        size, counts = mask.get("size"), mask.get("counts")
        if (
            type(counts) is str
            and type(size) in (list, tuple)
            and len(size) == 2
            and type(size[0]) is int
            and type(size[1]) is int
            and size[0] > 0
            and size[1] > 0
            and counts.isascii()
        ):
            return {"size": [size[0], size[1]], "counts": counts.encode("ascii")}
    where = f"image {image_index}: {role}"
    if isinstance(mask, dict):
        if "size" not in mask or "counts" not in mask:
            raise ValueError(
                f"{where} is a malformed RLE: it needs 'size' and 'counts', got keys {sorted(mask)}"
            )
        size = mask["size"]
        if not _integral_pair(size):
            raise ValueError(
                f"{where} is a malformed RLE: 'size' must be [height, width] as two integers, got {size!r}"
            )
        height, width = int(size[0]), int(size[1])
        if height <= 0 or width <= 0:
            raise ValueError(f"{where} is a malformed RLE: 'size' must be positive, got {size!r}")
        counts = mask["counts"]
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(f"{where} is a malformed RLE: 'counts' has non-ASCII characters") from None
        elif isinstance(counts, (list, tuple, np.ndarray)):
            runs = np.asarray(counts)
            if runs.ndim != 1 or not np.issubdtype(runs.dtype, np.integer) or (runs < 0).any():
                raise ValueError(
                    f"{where} is a malformed RLE: uncompressed 'counts' must be non-negative integers"
                )
            if int(runs.sum()) != height * width:
                raise ValueError(
                    f"{where} is a malformed RLE: uncompressed counts sum to {int(runs.sum())}, "
                    f"not height*width = {height * width}"
                )
            counts = mask_utils.frPyObjects(
                {"size": [height, width], "counts": runs.tolist()}, height, width
            )["counts"]
        elif not isinstance(counts, bytes):
            raise ValueError(
                f"{where} is a malformed RLE: 'counts' must be str, bytes or a list, got {type(counts).__name__}"
            )
        return {"size": [height, width], "counts": counts}
    if hasattr(mask, "detach") and hasattr(mask, "cpu"):  # a torch tensor, without importing torch here
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"{where} must be a 2-D mask, got an array of shape {mask.shape}")
        if mask.shape[0] == 0 or mask.shape[1] == 0:
            raise ValueError(f"{where} is an empty array of shape {mask.shape}")
        if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)):
            raise ValueError(
                f"{where} has dtype {mask.dtype}; pass a bool/integer mask (threshold scores first)"
            )
        rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
        return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}
    raise ValueError(
        f"{where} must be an RLE dict, a numpy array or a torch tensor, got {type(mask).__name__}"
    )


def _integral_pair(size):
    """Whether `size` is two integers (ints, numpy integers or integral floats such as 8.0; never 8.7 or True)."""
    if not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2:
        return False
    for v in size:
        if isinstance(v, (bool, np.bool_)):
            return False
        if isinstance(v, (int, np.integer)):
            continue
        if not isinstance(v, (float, np.floating)) or not float(v).is_integer():
            return False
    return True


def _areas(rles):
    """Foreground pixels of each RLE (float64), for any number of RLEs."""
    if not rles:
        return np.zeros(0, dtype=np.float64)
    chunks = [mask_utils.area(rles[i : i + _AREA_CHUNK]) for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(chunks).astype(np.float64)


def _decode_counts(buffer, string_lengths):
    """Decodes concatenated compressed COCO RLE strings (pycocotools' LEB128-like format) with numpy.

    Args:
        buffer (`np.ndarray` of uint8): all count strings joined.
        string_lengths (`np.ndarray` of int64, shape `(num_masks,)`): the length of each string.

    Returns:
        `(run_sums, ok)`: per mask, the sum of its decoded runs (int64) and whether the string decodes to
        valid runs (known characters, no dangling continuation, no negative run, no overflow).
    """
    num_masks = len(string_lengths)
    ok = string_lengths > 0
    run_sums = np.zeros(num_masks, dtype=np.int64)
    if len(buffer) == 0:
        return run_sums, ok
    chunks = buffer.astype(np.int64) - 48
    bad_char = (chunks < 0) | (chunks > 63)
    string_of_char = np.repeat(np.arange(num_masks), string_lengths)
    ok &= np.bincount(string_of_char, weights=bad_char, minlength=num_masks) == 0
    chunks = np.clip(chunks, 0, 63)
    has_more = (chunks & 0x20) != 0
    string_ends = np.cumsum(string_lengths) - 1
    nonempty = string_lengths > 0
    # A string whose last character asks for another chunk would make pycocotools read past its end.
    ok[nonempty] &= ~has_more[string_ends[nonempty]]
    group_end = ~has_more
    group_end[string_ends[nonempty]] = True  # never let a group span two strings
    group_start = np.concatenate(([0], np.flatnonzero(group_end)[:-1] + 1))
    group_of_char = np.cumsum(np.concatenate(([0], group_end[:-1].astype(np.int64))))
    position = np.arange(len(chunks)) - group_start[group_of_char]
    ok &= np.bincount(string_of_char, weights=position > 6, minlength=num_masks) == 0  # > 35 bits
    position = np.minimum(position, 6)
    values = np.add.reduceat((chunks & 0x1F) << (5 * position), group_start)
    last = np.flatnonzero(group_end)
    negative = (chunks[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (position[last[negative]] + 1))
    # Undo the delta coding: counts[m] = x[m] + counts[m - 2] for m > 2, per string.
    string_of_group = string_of_char[group_start]
    first_group = np.searchsorted(string_of_group, np.arange(num_masks))
    index_in_string = np.arange(len(values)) - first_group[string_of_group]
    counts = values.copy()
    for parity, start in ((0, 2), (1, 1)):
        chain = (index_in_string % 2 == parity) & (index_in_string >= start)
        running = np.cumsum(np.where(chain, values, 0))
        before = np.concatenate(([0], running))[first_group]  # running total before each string
        counts = np.where(chain, running - before[string_of_group], counts)
    ok &= np.bincount(string_of_group, weights=(counts < 0) | (counts >= 2**32), minlength=num_masks) == 0
    run_sums += np.bincount(string_of_group, weights=counts, minlength=num_masks).astype(np.int64)
    return run_sums, ok


def check_rles(rles, image_indices, roles):
    """Raises `ValueError` naming the image of the first RLE whose counts do not decode to `height*width`.

    Checks every compressed RLE in one vectorised pass, so that malformed input gives a clear error
    instead of a wrong number (or an out-of-bounds read inside pycocotools).
    """
    # Chunks keep the temporary arrays small (cache-sized), which is several times faster than one pass.
    for chunk_start in range(0, len(rles), _CHECK_CHUNK):
        chunk = rles[chunk_start : chunk_start + _CHECK_CHUNK]
        strings = [rle["counts"] for rle in chunk]
        lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
        buffer = np.frombuffer(b"".join(strings), dtype=np.uint8)
        run_sums, ok = _decode_counts(buffer, lengths)
        expected = np.fromiter((r["size"][0] * r["size"][1] for r in chunk), dtype=np.int64, count=len(chunk))
        bad = np.flatnonzero(~ok | (run_sums != expected))
        if len(bad):
            first = int(bad[0])
            reason = (
                "its counts do not decode"
                if not ok[first]
                else (
                    f"its runs cover {int(run_sums[first])} pixels, not height*width = {int(expected[first])}"
                )
            )
            where = chunk_start + first
            raise ValueError(f"image {image_indices[where]}: {roles[where]} is a malformed RLE: {reason}")


def _normalise_dataset(predictions, references, prediction_labels, reference_labels, index_offset=0):
    """Turns the user's nested inputs into RLE lists (validated) and normalised label lists."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got predictions for {len(predictions)} images but references for {len(references)}"
        )
    for name, labels, masks in (
        ("prediction_labels", prediction_labels, predictions),
        ("reference_labels", reference_labels, references),
    ):
        if labels is None:
            continue
        if len(labels) != len(masks):
            raise ValueError(f"{name} covers {len(labels)} images but there are {len(masks)}")
        for i, (image_labels, image_masks) in enumerate(zip(labels, masks)):
            if len(image_labels) != len(image_masks):
                raise ValueError(
                    f"image {i + index_offset}: {name} has {len(image_labels)} names for {len(image_masks)} masks"
                )
    all_rles, all_images, all_roles = [], [], []
    out_predictions, out_references = [], []
    for i, (image_predictions, image_references) in enumerate(zip(predictions, references)):
        image_index = i + index_offset
        converted = []
        for role, masks in (("prediction", image_predictions), ("reference", image_references)):
            if masks is None:
                masks = []
            rles = [to_rle(m, image_index, f"{role} {j}") for j, m in enumerate(masks)]
            all_rles.extend(rles)
            all_images.extend([image_index] * len(rles))
            all_roles.extend(f"{role} {j}" for j in range(len(rles)))
            converted.append(rles)
        out_predictions.append(converted[0])
        out_references.append(converted[1])
    check_rles(all_rles, all_images, all_roles)
    return out_predictions, out_references


def normalise_label(label):
    """Case- and whitespace-insensitive form of a part name."""
    return " ".join(str(label).lower().split())


# ----------------------------------------------------------------------------------------------------------
# Per-image scoring
# ----------------------------------------------------------------------------------------------------------


def _pairwise(predictions, references):
    """IoU, intersection and union for every (reference, prediction) pair, shape `(num_refs, num_preds)`."""
    ious = np.asarray(mask_utils.iou(predictions, references, [0] * len(references)), dtype=np.float64)
    ious = ious.reshape(len(predictions), len(references)).T
    pred_area = _areas(predictions)
    ref_area = _areas(references)
    total = ref_area[:, None] + pred_area[None, :]
    # IoU = I / (A + B - I)  =>  I = IoU (A + B) / (1 + IoU); exact after rounding, since I is an integer.
    intersection = np.rint(ious * total / (1.0 + ious))
    union = total - intersection
    return ious, intersection, union, ref_area, pred_area


def _check_sizes(predictions, references, image_index):
    if not references:
        return
    size = references[0]["size"]
    for role, masks in (("reference", references), ("prediction", predictions)):
        for j, rle in enumerate(masks):
            if rle["size"] != size:
                raise ValueError(
                    f"image {image_index}: {role} {j} has size {rle['size'][0]}x{rle['size'][1]} but reference 0 "
                    f"has size {size[0]}x{size[1]}"
                )


def _pairs_by_label(prediction_labels, reference_labels):
    """Pairs the k-th reference named X with the k-th prediction named X."""
    queue = defaultdict(list)
    for j, label in enumerate(prediction_labels):
        queue[normalise_label(label)].append(j)
    pairs = []
    for label in reference_labels:
        candidates = queue.get(normalise_label(label))
        pairs.append(candidates.pop(0) if candidates else None)
    return pairs


def _greedy_pairs(ious):
    """GLaMM-style matching: repeatedly take the highest-IoU pair, stop when the best left is 0."""
    ious = ious.copy()
    pairs = [None] * ious.shape[0]
    while ious.size and ious.max() > 0:
        r, p = np.unravel_index(np.argmax(ious), ious.shape)
        pairs[r] = int(p)
        ious[r, :] = -1
        ious[:, p] = -1
    return pairs


def _hungarian_pairs(ious):
    pairs = [None] * ious.shape[0]
    if ious.size:
        rows, cols = linear_sum_assignment(ious, maximize=True)
        for r, p in zip(rows, cols):
            if ious[r, p] > 0:
                pairs[r] = int(p)
    return pairs


def score_image(
    predictions,
    references,
    prediction_labels=None,
    reference_labels=None,
    matching="paired",
    empty_policy="one",
    image_index=0,
):
    """Scores one image.

    Args:
        predictions, references: lists of compressed RLE dicts (see `to_rle`).

    Returns:
        `(scores, num_unmatched_predictions)` where `scores` is a list of `(iou, intersection, union)`, one per
        scored reference mask (with `union` matching: one for the image).
    """
    _check_sizes(predictions, references, image_index)
    if not references:
        return [], len(predictions)
    if matching == "union":
        reference_union = mask_utils.merge(references, intersect=False)
        ref_area = float(mask_utils.area(reference_union))
        if not predictions:
            return [(0.0, 0.0, ref_area)], 0
        prediction_union = mask_utils.merge(predictions, intersect=False)
        ious, intersection, union, _, pred_area = _pairwise([prediction_union], [reference_union])
        if ref_area == 0 and pred_area[0] == 0:
            return ([] if empty_policy == "skip" else [(EMPTY_SCORES[empty_policy], 0.0, 0.0)]), 0
        return [(float(ious[0, 0]), float(intersection[0, 0]), float(union[0, 0]))], 0

    if predictions:
        ious, intersection, union, ref_area, pred_area = _pairwise(predictions, references)
        both_empty = (ref_area[:, None] == 0) & (pred_area[None, :] == 0)
        ious = np.where(both_empty, 1.0, ious)  # pycocotools says 0 for empty vs empty
    else:
        ref_area = _areas(references)
        both_empty = np.zeros((len(references), 0), dtype=bool)

    if matching == "paired":
        if prediction_labels is not None and reference_labels is not None:
            pairs = _pairs_by_label(prediction_labels, reference_labels)
        else:
            pairs = [j if j < len(predictions) else None for j in range(len(references))]
    elif matching == "greedy":
        pairs = _greedy_pairs(ious) if predictions else [None] * len(references)
    elif matching == "hungarian":
        pairs = _hungarian_pairs(ious) if predictions else [None] * len(references)
    else:
        raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")

    scores = []
    for r, p in enumerate(pairs):
        if p is None:  # a reference without a prediction scores 0
            scores.append((0.0, 0.0, float(ref_area[r])))
        elif both_empty[r, p]:
            if empty_policy != "skip":
                scores.append((EMPTY_SCORES[empty_policy], 0.0, 0.0))
        else:
            scores.append((float(ious[r, p]), float(intersection[r, p]), float(union[r, p])))
    matched = {p for p in pairs if p is not None}
    return scores, len(predictions) - len(matched)


# ----------------------------------------------------------------------------------------------------------
# Dataset-level metric (plain Python)
# ----------------------------------------------------------------------------------------------------------


def compute_giou(
    predictions,
    references,
    prediction_labels=None,
    reference_labels=None,
    matching="paired",
    empty_policy="one",
):
    """Computes micro / macro gIoU and cIoU over a dataset of images (see the module docstring for inputs).

    Returns:
        `dict` with `micro_giou`, `macro_giou`, `ciou`, `num_images`, `num_masks`, `num_unmatched_predictions`.
    """
    if matching not in MATCHINGS:
        raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
    if (prediction_labels is None) != (reference_labels is None):
        raise ValueError("pairing by name needs both prediction_labels and reference_labels")
    predictions, references = _normalise_dataset(predictions, references, prediction_labels, reference_labels)
    return _aggregate(predictions, references, prediction_labels, reference_labels, matching, empty_policy)


def _aggregate(predictions, references, prediction_labels, reference_labels, matching, empty_policy):
    all_ious, image_means = [], []
    total_intersection = total_union = 0.0
    unmatched = 0
    for i, (image_predictions, image_references) in enumerate(zip(predictions, references)):
        scores, image_unmatched = score_image(
            image_predictions,
            image_references,
            None if prediction_labels is None else prediction_labels[i],
            None if reference_labels is None else reference_labels[i],
            matching,
            empty_policy,
            image_index=i,
        )
        unmatched += image_unmatched
        if not scores:
            continue
        ious = [s[0] for s in scores]
        all_ious.extend(ious)
        image_means.append(sum(ious) / len(ious))
        total_intersection += sum(s[1] for s in scores)
        total_union += sum(s[2] for s in scores)
    if not all_ious:
        logger.warning("gIoU: no reference mask was scored; every score is reported as 0.0")
    return {
        "micro_giou": float(np.mean(all_ious)) if all_ious else 0.0,
        "macro_giou": float(np.mean(image_means)) if image_means else 0.0,
        "ciou": float(total_intersection / total_union) if total_union > 0 else 0.0,
        "num_images": len(image_means),
        "num_masks": len(all_ious),
        "num_unmatched_predictions": unmatched,
    }


# ----------------------------------------------------------------------------------------------------------
# evaluate module
# ----------------------------------------------------------------------------------------------------------

_MASK_FEATURE = {
    "size": datasets.List(datasets.Value("int64")),
    "counts": datasets.Value("string"),
    "label": datasets.Value("string"),
}


def _with_labels(rles, labels):
    """RLE dicts as the arrow schema stores them: str counts and an optional label riding along."""
    return [
        [
            {
                "size": rle["size"],
                "counts": rle["counts"].decode("ascii"),
                "label": None if lab is None else lab[j],
            }
            for j, rle in enumerate(image)
        ]
        for image, lab in zip(rles, labels if labels is not None else [None] * len(rles))
    ]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Giou(evaluate.Metric):
    """`evaluate` wrapper around `compute_giou`. Masks are turned into RLE before they are stored, so dense
    inputs are encoded once and the arrow cache holds compact strings; part labels ride along with them."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(_MASK_FEATURE),
                    "references": datasets.List(_MASK_FEATURE),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2505.20759", "https://github.com/dvlab-research/LISA"],
        )

    def _prepare(self, predictions, references, prediction_labels, reference_labels):
        offset = getattr(self, "_images_added", 0)
        rle_predictions, rle_references = _normalise_dataset(
            predictions, references, prediction_labels, reference_labels, index_offset=offset
        )
        self._images_added = offset + len(predictions)
        return _with_labels(rle_predictions, prediction_labels), _with_labels(
            rle_references, reference_labels
        )

    def add_batch(
        self, *, predictions=None, references=None, prediction_labels=None, reference_labels=None, **kwargs
    ):
        """Adds a batch of images (see the arguments below); masks are validated and encoded now."""
        predictions, references = self._prepare(predictions, references, prediction_labels, reference_labels)
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(
        self, *, prediction=None, reference=None, prediction_labels=None, reference_labels=None, **kwargs
    ):
        """Adds one image: `prediction` / `reference` are its lists of masks."""
        self.add_batch(
            predictions=[prediction],
            references=[reference],
            prediction_labels=None if prediction_labels is None else [prediction_labels],
            reference_labels=None if reference_labels is None else [reference_labels],
            **kwargs,
        )

    def compute(
        self, *, predictions=None, references=None, prediction_labels=None, reference_labels=None, **kwargs
    ):
        """Scores everything added so far plus `predictions` / `references` (see the arguments below)."""
        if predictions is not None or references is not None:
            if predictions is None or references is None:
                raise ValueError("gIoU needs both predictions and references")
            self.add_batch(
                predictions=predictions,
                references=references,
                prediction_labels=prediction_labels,
                reference_labels=reference_labels,
            )
        self._images_added = 0
        return super().compute(**kwargs)

    def _compute(self, predictions, references, matching="paired", empty_policy="one"):
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
        if empty_policy not in EMPTY_POLICIES:
            raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
        labelled = any(m["label"] is not None for image in predictions for m in image) and any(
            m["label"] is not None for image in references for m in image
        )
        prediction_labels = [[m["label"] for m in image] for image in predictions] if labelled else None
        reference_labels = [[m["label"] for m in image] for image in references] if labelled else None
        predictions = [
            [{"size": m["size"], "counts": m["counts"].encode("ascii")} for m in im] for im in predictions
        ]
        references = [
            [{"size": m["size"], "counts": m["counts"].encode("ascii")} for m in im] for im in references
        ]
        return _aggregate(
            predictions, references, prediction_labels, reference_labels, matching, empty_policy
        )
