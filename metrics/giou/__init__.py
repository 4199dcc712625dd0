"""gIoU metric: `evaluate.load("metrics/giou")`, or the plain function `compute_giou`."""

from .giou import EMPTY_POLICIES, MATCHINGS, compute_giou, score_image, to_rle

__all__ = ["EMPTY_POLICIES", "MATCHINGS", "compute_giou", "score_image", "to_rle"]
