"""PARTONOMY rows → PLUM training batches, the training mixture, and a resumable data order."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from partonomy_dataset import masks as rle


def conversation(row) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The correct answer's conversation (two turns for the part-whole types) and the parts to tag per turn."""
    parts_turn = (row["question"], row["answer_choices"][row["correct_index"]])
    if row["question_type"] == "part2whole":
        object_turn = (row["object_question"], row["object_answer_choices"][row["object_correct_index"]])
        return [parts_turn, object_turn], [row["parts"], []]
    if row["question_type"] == "whole2part":
        object_turn = (row["object_question"], row["object_answer_choices"][row["object_correct_index"]])
        return [object_turn, parts_turn], [[], row["parts"]]
    return [parts_turn], [row["parts"]]


class Collator:
    """Dataset rows → PLUM training batches (ground-truth masks decoded from RLE at the original size). With
    `keep_images`, the batch also carries the rows' images (`images`), for an embedding cache keyed by image."""

    def __init__(self, processor, keep_images: bool = False):
        self.processor, self.keep_images = processor, keep_images

    def __call__(self, rows):
        conversations, parts = zip(*(conversation(row) for row in rows))
        batch = self.processor(
            images=[row["image"] for row in rows], conversations=list(conversations), parts=list(parts)
        )
        batch.pop("spans")
        batch = dict(batch)
        batch["gt_masks"] = [
            torch.from_numpy(np.stack([rle.decode(m) for m in row["masks"]])).float() for row in rows
        ]
        if self.keep_images:
            batch["images"] = [row["image"] for row in rows]
        return batch


def load_training_data(dataset: str, configs: list[str], split: str, seed: int, probabilities=None):
    """One config, or several mixed with `interleave_datasets` (`probabilities`: the mixture weights)."""
    parts = [datasets.load_dataset(dataset, config, split=split) for config in configs]
    if len(parts) == 1:
        return parts[0]
    if probabilities is not None:
        if len(probabilities) != len(parts):
            raise ValueError(f"{len(probabilities)} sampling probabilities for {len(parts)} configs")
        probabilities = [p / sum(probabilities) for p in probabilities]
    return datasets.interleave_datasets(
        parts, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
    )


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch: a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows).tolist()
