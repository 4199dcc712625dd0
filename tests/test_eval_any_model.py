"""PARTONOMY as a benchmark for any model: transformers image-text-to-text models of two architectures (LLaVA-1.5 and
Qwen2-VL, tiny and random, with their real processors and chat templates) through `eval_partonomy.py --model`, and
external segmenters' outputs through `--from-predictions` in the documented format."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import eval_partonomy
from partonomy_dataset import __main__ as dataset_cli
from partonomy_dataset import masks as rle
from plum_training.scoring import ChatTemplateChoiceScorer
from plum_training.testing.tiny_vlms import write_tiny_llava, write_tiny_qwen2_vl

WRITERS = {"llava": write_tiny_llava, "qwen2_vl": write_tiny_qwen2_vl}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("any-model")
    assert (
        dataset_cli.main(["build", "--config", "toy", "--out", str(root / "data"), "--toy-num-images", "34"])
        == 0
    )
    for name, writer in WRITERS.items():
        writer(root / name)
    return root


def evaluate(root, out, *extra):
    return eval_partonomy.main(
        [
            "--dataset",
            str(root / "data"),
            "--config",
            "toy",
            "--split",
            "validation",
            "--limit",
            "10",
            "--out",
            str(out),
        ]
        + list(extra)
    )


@pytest.mark.parametrize("architecture", sorted(WRITERS))
def test_shared_prefix_scores_equal_one_forward_per_choice(root, architecture):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(str(root / architecture)).eval()
    scorer = ChatTemplateChoiceScorer(model, AutoProcessor.from_pretrained(str(root / architecture)))
    image = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8))
    choices = [
        "The car in the image has the following visible parts: door and wheel.",
        "The car in the image has the following visible parts: wheel.",
        "It is a car.",
        "roof",
        "The car in the image has the following visible parts: body, door, wheel, and window.",
    ]
    for turns in (
        [("What visible parts does the car in the image have?", None)],
        [("What is the object in the image?", "It is a car."), ("What visible parts does it have?", None)],
    ):
        shared = scorer(image, turns, choices)
        full = scorer.full_forward_scores(image, turns, choices)
        assert shared.shape == (5,) and torch.allclose(shared, full, atol=1e-4), (architecture, shared, full)
    assert scorer.full_forwards == 0  # every choice extended the prompt token for token


def test_two_architectures_through_the_whole_script(root, tmp_path):
    for architecture in WRITERS:
        results = evaluate(
            root, tmp_path / architecture, "--model", str(root / architecture), "--device", "cpu"
        )
        row = results[architecture]
        assert row["masks"] is None  # does not segment: "–"
        assert (
            "oracle-text" not in results
        )  # the oracle-text row reuses the model's masks, and there are none
        assert len(row["text"]) >= 4
        header, *records = [
            json.loads(line)
            for line in (tmp_path / architecture / "predictions.jsonl").read_text().splitlines()
        ]
        assert header["header"]["model"].endswith(architecture) and len(records) == 10
        for record in records:
            assert record["chosen"] == int(np.argmax(record["scores"])) and "masks" not in record
        tables = (tmp_path / architecture / "tables.md").read_text()
        assert f"| {architecture} | – | – |" in tables  # Table 2
        rescored = evaluate(
            root,
            tmp_path / f"{architecture}-again",
            "--from-predictions",
            str(tmp_path / architecture / "predictions.jsonl"),
            "--name",
            architecture,
        )
        # the same rows from the dump alone; the blind row has a dump of its own, not re-scored here
        assert rescored == {name: row for name, row in results.items() if name != f"{architecture}, blind"}


def test_external_predictions_in_the_documented_format(root, tmp_path):
    import datasets

    rows = list(datasets.load_dataset(str(root / "data"), "toy", split="validation").select(range(4)))
    perfect, half, lines = rows[0], rows[1], []
    # row 0: every part exactly right; row 1: its first part right, the others missing; row 2: text only
    lines.append(
        {
            "id": perfect["id"],
            "chosen": perfect["correct_index"],
            "masks": dict(zip(perfect["parts"], perfect["masks"])),
        }
    )
    lines.append(
        {
            "id": half["id"],
            "chosen": (half["correct_index"] + 1) % 5,
            "masks": {half["parts"][0]: half["masks"][0]},
        }
    )
    lines.append(
        {
            "id": rows[2]["id"],
            "chosen": rows[2]["correct_index"],
            "object_chosen": rows[2]["object_correct_index"],
        }
    )
    path = tmp_path / "lisa_predictions.jsonl"  # written by hand, as another model's own code would
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = evaluate(
        root, tmp_path / "out", "--from-predictions", str(path), "--name", "LISA", "--limit", "4"
    )
    masks = results["LISA"]["masks"]
    scored = {}
    for row in (perfect, half):
        scored.setdefault(row["question_type"], []).append(row)
    for question_type, typed in scored.items():
        expected = []
        for row in typed:
            ious = [1.0] * len(row["parts"]) if row is perfect else [1.0] + [0.0] * (len(row["parts"]) - 1)
            expected.append(ious)
        micro = np.mean([v for ious in expected for v in ious])
        macro = np.mean([np.mean(ious) for ious in expected])
        assert masks[question_type]["micro_giou"] == pytest.approx(micro)
        assert masks[question_type]["macro_giou"] == pytest.approx(macro)
    text = results["LISA"]["text"]
    right = {}
    for row, correct in ((perfect, True), (half, False), (rows[2], True)):
        right.setdefault(row["question_type"], []).append(correct)
    assert set(text) == set(right)  # the question without `chosen` is left out of Table 3
    for question_type, picks in right.items():
        assert text[question_type]["accuracy"] == pytest.approx(np.mean(picks))
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "| LISA |" in tables
    assert rle.decode(perfect["masks"][0]).any()  # a real mask was scored, not an empty one
