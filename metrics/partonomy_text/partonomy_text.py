# Copyright 2026 The PLUM / PARTONOMY release team. Licensed under the Apache License, Version 2.0.
"""PARTONOMY text metrics (paper Table 3): multiple-choice accuracy, part precision / recall of the chosen
answer, and object accuracy for part-whole questions.

The logic is plain Python (`compute_partonomy_text`); `PartonomyText` wraps it as an `evaluate` module
(`evaluate.load("metrics/partonomy_text")`).
"""

from collections import defaultdict

import datasets
import evaluate
import numpy as np

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
Scores multiple-choice answers to PARTONOMY part questions. Accuracy (A) is the fraction of questions whose
chosen answer is the correct one (for part-whole questions this is the part accuracy, PA). Precision (P) and
recall (R) compare the parts named by the chosen answer with the ground-truth parts (the correct answer's
parts), per question, then average over questions; part names are compared case- and
whitespace-insensitively. Object accuracy (OA) scores the object choice of part2whole / whole2part questions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): the index of the chosen answer choice, per question.
    references (`list` of `int`): the index of the correct answer choice, per question.
    answer_parts (`list` of `list` of `list` of `str`, *optional*): per question, the part names of every
        answer choice. Needed for precision and recall.
    question_types (`list` of `str`, *optional*): per question, its type (identification, intersection,
        difference, part2whole, whole2part); adds a `per_type` breakdown.
    object_predictions (`list` of `int`, *optional*): the chosen object choice, -1 where not applicable.
    object_references (`list` of `int`, *optional*): the correct object choice, -1 where not applicable.
Returns:
    accuracy (`float`): multiple-choice accuracy in [0, 1].
    precision (`float` or `None`): mean part precision of the chosen answers (None without `answer_parts`).
    recall (`float` or `None`): mean part recall of the chosen answers (None without `answer_parts`).
    object_accuracy (`float` or `None`): accuracy of object choices (None when no question has one).
    num_questions (`int`), num_object_questions (`int`).
    per_type (`dict`): the same numbers per question type (with `part_accuracy` for part-whole types).
Examples:
    >>> metric = evaluate.load("metrics/partonomy_text")
    >>> metric.compute(predictions=[0, 1], references=[0, 0],
    ...                answer_parts=[[["wing", "tail"], ["wing"]], [["wheel"], ["wheel", "door"]]])
    {'accuracy': 0.5, 'precision': 0.75, 'recall': 1.0, 'object_accuracy': None, 'num_questions': 2, ...}
"""

NOT_APPLICABLE = -1


def normalise_part(name):
    """Case- and whitespace-insensitive form of a part name."""
    return " ".join(str(name).lower().split())


def part_precision_recall(chosen_parts, true_parts):
    """Precision and recall of one chosen part list against the ground-truth list (as sets)."""
    chosen = {normalise_part(p) for p in chosen_parts}
    true = {normalise_part(p) for p in true_parts}
    hits = len(chosen & true)
    precision = hits / len(chosen) if chosen else float(not true)
    recall = hits / len(true) if true else float(not chosen)
    return precision, recall


def _summary(rows):
    """Means of a list of per-question dicts."""
    out = {"accuracy": float(np.mean([r["correct"] for r in rows])), "num_questions": len(rows)}
    with_parts = [r for r in rows if r["precision"] is not None]
    out["precision"] = float(np.mean([r["precision"] for r in with_parts])) if with_parts else None
    out["recall"] = float(np.mean([r["recall"] for r in with_parts])) if with_parts else None
    with_objects = [r for r in rows if r["object_correct"] is not None]
    out["object_accuracy"] = (
        float(np.mean([r["object_correct"] for r in with_objects])) if with_objects else None
    )
    out["num_object_questions"] = len(with_objects)
    return out


def compute_partonomy_text(
    predictions,
    references,
    answer_parts=None,
    question_types=None,
    object_predictions=None,
    object_references=None,
):
    """Plain-Python form of the metric; see the module's `_KWARGS_DESCRIPTION` for arguments and outputs."""
    n = len(predictions)
    if len(references) != n:
        raise ValueError(f"got {n} predictions but {len(references)} references")
    if n == 0:
        raise ValueError("partonomy_text needs at least one question")
    for name, values in (
        ("answer_parts", answer_parts),
        ("question_types", question_types),
        ("object_predictions", object_predictions),
        ("object_references", object_references),
    ):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} questions")
    if (object_predictions is None) != (object_references is None):
        raise ValueError("object accuracy needs both object_predictions and object_references")

    rows = []
    for i in range(n):
        chosen, correct = int(predictions[i]), int(references[i])
        row = {"correct": chosen == correct, "precision": None, "recall": None, "object_correct": None}
        if answer_parts is not None and answer_parts[i]:
            choices = answer_parts[i]
            for what, index in (("prediction", chosen), ("reference", correct)):
                if not 0 <= index < len(choices):
                    raise ValueError(
                        f"question {i}: {what} {index} is not one of its {len(choices)} answer choices"
                    )
            row["precision"], row["recall"] = part_precision_recall(choices[chosen], choices[correct])
        if object_references is not None and int(object_references[i]) != NOT_APPLICABLE:
            row["object_correct"] = int(object_predictions[i]) == int(object_references[i])
        row["type"] = question_types[i] if question_types is not None else None
        rows.append(row)

    result = _summary(rows)
    if question_types is not None:
        by_type = defaultdict(list)
        for row in rows:
            by_type[row["type"]].append(row)
        per_type = {}
        for question_type, type_rows in sorted(by_type.items()):
            summary = _summary(type_rows)
            if summary["num_object_questions"]:
                summary["part_accuracy"] = summary["accuracy"]  # the paper's PA column
            per_type[question_type] = summary
        result["per_type"] = per_type
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PartonomyText(evaluate.Metric):
    """`evaluate` wrapper around `compute_partonomy_text`; the optional inputs are stored with defaults
    (no parts, no type, object index -1) so that they batch with `add_batch` like the required ones."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                    "answer_parts": datasets.List(datasets.List(datasets.Value("string"))),
                    "question_types": datasets.Value("string"),
                    "object_predictions": datasets.Value("int32"),
                    "object_references": datasets.Value("int32"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2505.20759"],
        )

    @staticmethod
    def _fill(predictions, references, answer_parts, question_types, object_predictions, object_references):
        n = len(predictions)
        if (object_predictions is None) != (object_references is None):
            raise ValueError("object accuracy needs both object_predictions and object_references")
        return {
            "predictions": predictions,
            "references": references,
            "answer_parts": answer_parts if answer_parts is not None else [[] for _ in range(n)],
            "question_types": question_types if question_types is not None else [""] * n,
            "object_predictions": object_predictions
            if object_predictions is not None
            else [NOT_APPLICABLE] * n,
            "object_references": object_references if object_references is not None else [NOT_APPLICABLE] * n,
        }

    def add_batch(
        self,
        *,
        predictions=None,
        references=None,
        answer_parts=None,
        question_types=None,
        object_predictions=None,
        object_references=None,
        **kwargs,
    ):
        """Adds a batch of questions (see the arguments below)."""
        filled = self._fill(
            predictions, references, answer_parts, question_types, object_predictions, object_references
        )
        super().add_batch(**filled, **kwargs)

    def add(
        self,
        *,
        prediction=None,
        reference=None,
        answer_parts=None,
        question_type=None,
        object_prediction=None,
        object_reference=None,
        **kwargs,
    ):
        """Adds one question: `answer_parts` is its list of per-choice part lists."""
        self.add_batch(
            predictions=[prediction],
            references=[reference],
            answer_parts=None if answer_parts is None else [answer_parts],
            question_types=None if question_type is None else [question_type],
            object_predictions=None if object_prediction is None else [object_prediction],
            object_references=None if object_reference is None else [object_reference],
            **kwargs,
        )

    def compute(
        self,
        *,
        predictions=None,
        references=None,
        answer_parts=None,
        question_types=None,
        object_predictions=None,
        object_references=None,
        **kwargs,
    ):
        """Scores everything added so far plus the given questions (see the arguments below)."""
        if predictions is not None or references is not None:
            self.add_batch(
                predictions=predictions,
                references=references,
                answer_parts=answer_parts,
                question_types=question_types,
                object_predictions=object_predictions,
                object_references=object_references,
            )
        return super().compute(**kwargs)

    def _compute(
        self, predictions, references, answer_parts, question_types, object_predictions, object_references
    ):
        has_types = any(question_types)
        return compute_partonomy_text(
            predictions,
            references,
            answer_parts=answer_parts if any(answer_parts) else None,
            question_types=question_types if has_types else None,
            object_predictions=object_predictions,
            object_references=object_references,
        )
