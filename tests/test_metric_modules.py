"""Both metrics through `evaluate.load` (offline), and the text metric's numbers."""

from pathlib import Path

import evaluate
import numpy as np
import pytest

from metrics.giou import compute_giou
from metrics.partonomy_text import compute_partonomy_text

METRICS = Path(__file__).resolve().parent.parent / "metrics"


@pytest.fixture(scope="module")
def giou():
    return evaluate.load(str(METRICS / "giou"))


@pytest.fixture(scope="module")
def text_metric():
    return evaluate.load(str(METRICS / "partonomy_text"))


def random_images(seed, n=6):
    rng = np.random.default_rng(seed)
    predictions, references, labels = [], [], []
    for _ in range(n):
        h, w = rng.integers(4, 30, size=2)
        k = rng.integers(1, 4)
        references.append([rng.random((h, w)) < 0.4 for _ in range(k)])
        predictions.append([rng.random((h, w)) < 0.4 for _ in range(k)])
        labels.append([f"part {j}" for j in range(k)])
    return predictions, references, labels


def test_giou_module_matches_plain_function(giou):
    predictions, references, labels = random_images(1)
    for matching in ("paired", "greedy", "hungarian", "union"):
        expected = compute_giou(predictions, references, matching=matching)
        assert giou.compute(predictions=predictions, references=references, matching=matching) == expected


def test_giou_add_batch_accumulates_with_labels(giou):
    predictions, references, labels = random_images(2)
    reversed_predictions = [p[::-1] for p in predictions]
    reversed_labels = [lab[::-1] for lab in labels]
    expected = compute_giou(predictions, references)
    for start in range(0, len(predictions), 4):
        giou.add_batch(
            predictions=reversed_predictions[start : start + 4],
            references=references[start : start + 4],
            prediction_labels=reversed_labels[start : start + 4],
            reference_labels=labels[start : start + 4],
        )
    assert giou.compute() == expected  # the labels undid the reversal


def test_giou_module_errors_name_the_global_image(giou):
    predictions, references, _ = random_images(3, n=3)
    giou.add_batch(predictions=predictions, references=references)
    bad = [[{"size": [2, 2], "counts": "zz"}]]
    with pytest.raises(ValueError, match="image 3: reference 0 is a malformed RLE"):
        giou.add_batch(predictions=[[np.zeros((2, 2), bool)]], references=bad)
    giou.compute()


QUESTIONS = {
    "predictions": [0, 1, 2, 0],
    "references": [0, 0, 2, 1],
    "answer_parts": [
        [["wing", "tail"], ["wing"], ["wheel"]],
        [["Wheel", "door"], ["wheel ", "door", "window"], ["door"]],
        [["eye"], ["eye", "ear"], ["nose"]],
        [["head", "neck"], ["head"], ["tail"]],
    ],
    "question_types": ["identification", "identification", "part2whole", "whole2part"],
    "object_predictions": [-1, -1, 3, 0],
    "object_references": [-1, -1, 3, 2],
}


def test_text_metric_hand_computed(text_metric):
    expected_precision = [1, 2 / 3, 1, 1 / 2]
    expected_recall = [1, 1, 1, 1]
    result = compute_partonomy_text(**QUESTIONS)
    assert result["accuracy"] == pytest.approx(2 / 4)
    assert result["precision"] == pytest.approx(np.mean(expected_precision))
    assert result["recall"] == pytest.approx(np.mean(expected_recall))
    assert result["object_accuracy"] == pytest.approx(1 / 2)
    assert result["per_type"]["identification"]["accuracy"] == pytest.approx(1 / 2)
    assert result["per_type"]["identification"]["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["per_type"]["part2whole"]["part_accuracy"] == 1.0
    assert result["per_type"]["part2whole"]["object_accuracy"] == 1.0
    assert result["per_type"]["whole2part"]["object_accuracy"] == 0.0
    assert "part_accuracy" not in result["per_type"]["identification"]
    assert text_metric.compute(**QUESTIONS) == result


def test_text_metric_optional_inputs_and_errors(text_metric):
    plain = text_metric.compute(predictions=[1, 1, 0], references=[1, 0, 0])
    assert plain["accuracy"] == pytest.approx(2 / 3)
    assert plain["precision"] is None and plain["object_accuracy"] is None and "per_type" not in plain
    for i in range(4):
        text_metric.add(
            prediction=QUESTIONS["predictions"][i],
            reference=QUESTIONS["references"][i],
            answer_parts=QUESTIONS["answer_parts"][i],
            question_type=QUESTIONS["question_types"][i],
            object_prediction=QUESTIONS["object_predictions"][i],
            object_reference=QUESTIONS["object_references"][i],
        )
    assert text_metric.compute() == compute_partonomy_text(**QUESTIONS)
    with pytest.raises(ValueError, match="question 1: prediction 7 is not one of its 3 answer choices"):
        compute_partonomy_text([0, 7], [0, 0], answer_parts=QUESTIONS["answer_parts"][:2])
    with pytest.raises(ValueError, match="needs both object_predictions and object_references"):
        compute_partonomy_text([0], [0], object_predictions=[1])
