"""PARTONOMY text metric: `evaluate.load("metrics/partonomy_text")`, or the plain `compute_partonomy_text`."""

from .partonomy_text import compute_partonomy_text, part_precision_recall

__all__ = ["compute_partonomy_text", "part_precision_recall"]
