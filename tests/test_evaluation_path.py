"""One evaluation path: in-training evaluation of a checkpoint equals `eval_partonomy.py` on the same rows, number for
number; the blind row withholds the image from CLIP and SAM; baselines come from the same scoring; a row the processor
refuses is counted and skipped."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import eval_partonomy
from partonomy_dataset import __main__ as dataset_cli
from plum_training import evaluation, trainer
from plum_training.arguments import DataArguments, ModelArguments, TrainArguments
from plum_training.evaluation import blind_image, headline, predict, score, without_images


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "partonomy"
    assert dataset_cli.main(["build", "--config", "toy", "--out", str(out), "--toy-num-images", "34"]) == 0
    return out


def test_in_training_evaluation_equals_eval_partonomy(toy, tmp_path):
    result = trainer.PlumTrainer(
        ModelArguments(model_name_or_path="tiny"),
        DataArguments(dataset=str(toy), max_eval_samples=10),
        TrainArguments(
            output_dir=str(tmp_path / "run"),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            max_steps=3,
            warmup_steps=1,
            learning_rate=1e-3,
            eval_steps=3,
            save_steps=0,
            export_format="adapter",
            mixed_precision="no",
        ),
    ).train()
    in_training = result["evals"][-1]["result"]
    export = f"{result['final_checkpoint']}/model"
    script = eval_partonomy.main(
        [
            "--model",
            export,
            "--trust_remote_code",
            "--dataset",
            str(toy),
            "--config",
            "toy",
            "--split",
            "validation",
        ]
        + ["--limit", "10", "--out", str(tmp_path / "eval"), "--no-blind", "--name", "run"]
    )
    for key in ("text", "masks", "overall", "questions"):
        assert script["run"][key] == in_training[key], key
    assert set(headline(in_training)) >= {"micro_giou", "macro_giou", "identification_A", "whole2part_OA"}


def test_blind_rows_see_a_flat_grey_image_of_the_same_size(toy):
    rows = list(datasets.load_dataset(str(toy), "toy", split="validation"))[:3]
    blind = without_images(rows)
    for row, withheld in zip(rows, blind):
        pixels = np.asarray(withheld["image"])
        assert withheld["image"].size == row["image"].size and pixels.min() == pixels.max()
        assert withheld["id"] == row["id"] and withheld["masks"] == row["masks"]
    assert blind_image(Image.new("RGB", (40, 30))).size == (40, 30)


def test_baselines_score_through_the_same_path(toy):
    rows = list(datasets.load_dataset(str(toy), "toy", split="validation"))
    whole = score(rows, evaluation.whole_object_records(rows))
    assert whole["text"] == {} and 0 < whole["overall"]["micro_giou"] < 1
    perfect = score(
        rows, [{"id": r["id"], "masks": list(r["masks"]), "mask_parts": list(r["parts"])} for r in rows]
    )
    assert perfect["overall"] == {"micro_giou": 1.0, "macro_giou": 1.0}
    oracle = score(rows, evaluation.oracle_records(rows, evaluation.whole_object_records(rows)))
    assert all(t["accuracy"] == 1.0 for t in oracle["text"].values())
    assert oracle["overall"] == whole["overall"]


def test_a_row_the_processor_refuses_is_skipped_and_counted(toy):
    from modeling_plum.convert import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny()
    rows = list(datasets.load_dataset(str(toy), "toy", split="validation"))[:4]
    rows[1] = {**rows[1], "image": Image.new("RGB", (8, 8))}  # below the processor's minimum side
    records, skipped = predict(model, processor, rows, batch_size=2, progress=False)
    assert [r["id"] for r in records] == [rows[0]["id"], rows[2]["id"], rows[3]["id"]]
    assert skipped[0][0] == rows[1]["id"] and "8x8" in skipped[0][1]
    json.dumps(records)  # records are what a predictions file holds


def test_a_config_that_does_not_belong_to_its_weights_is_refused(toy, tmp_path):
    """A PLUM folder whose config.json says `llava` would build a default-size LLaVA (7B parameters) before failing."""
    from modeling_plum.convert import main as convert

    folder = tmp_path / "plum-tiny"
    assert convert(["--preset", "tiny", "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    config.pop("auto_map")
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(
        ValueError, match=r"describes a llava model of [\d,]+ parameters, but its weights hold"
    ):
        eval_partonomy.main(
            ["--model", str(folder), "--trust_remote_code", "--dataset", str(toy), "--config", "toy"]
            + ["--split", "validation", "--limit", "2", "--out", str(tmp_path / "eval")]
        )
