"""`make demo`: the whole PLUM pipeline on the procedural toy set, on a CPU, in under 10 minutes.

Builds the toy PARTONOMY config, trains the tiny PLUM (LoRA on its LM, SAM trained from scratch), evaluates it
on held-out toy images beside the untrained model and the whole-object baseline, writes overlay PNGs and
`outputs/demo_results.json`, and checks that the saved checkpoint loads with `AutoModel(trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor

import train_accelerate as trainer
from metrics.giou import compute_giou
from modeling_plum.convert import build_tiny
from partonomy_dataset import __main__ as dataset_cli
from partonomy_dataset import masks as rle

OUT = Path("outputs")
COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def whole_object_baseline(rows) -> dict:
    """Predict the whole object (the union of its ground-truth parts) for every part."""
    predictions, references = [], []
    for row in rows:
        whole = rle.decode(rle.union(list(row["masks"])))
        predictions.append([whole] * len(row["masks"]))
        references.append(list(row["masks"]))
    giou = compute_giou(predictions, references)
    return {"micro_giou": giou["micro_giou"], "macro_giou": giou["macro_giou"], "choice_accuracy": None}


def overlay(image: Image.Image, masks, names, path: Path):
    """The image beside the same image with coloured part masks and their names."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    painted = base.copy()
    for k, mask in enumerate(masks):
        painted[mask] = 0.45 * painted[mask] + 0.55 * np.array(COLOURS[k % len(COLOURS)])
    scale = 3
    canvas = Image.new("RGB", (base.shape[1] * 2 * scale, base.shape[0] * scale + 14 * len(names)), "white")
    canvas.paste(
        Image.fromarray(base.astype(np.uint8)).resize((base.shape[1] * scale, base.shape[0] * scale)), (0, 0)
    )
    canvas.paste(
        Image.fromarray(painted.astype(np.uint8)).resize((base.shape[1] * scale, base.shape[0] * scale)),
        (base.shape[1] * scale, 0),
    )
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(names):
        y = base.shape[0] * scale + 14 * k
        draw.rectangle([4, y + 2, 14, y + 12], fill=COLOURS[k % len(COLOURS)])
        draw.text((20, y), name, fill="black")
    canvas.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-images", type=int, default=1200)
    parser.add_argument("--train-steps", type=int, default=2000, help="optimizer steps (batch 8)")
    parser.add_argument(
        "--train-seconds", type=float, default=520, help="stop training early after this long"
    )
    parser.add_argument("--eval-questions", type=int, default=200)
    parser.add_argument(
        "--learning-rate", type=float, default=6e-4, help="peak; the tiny model trains from scratch"
    )
    args = parser.parse_args()
    started = time.monotonic()
    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)

    data_dir = OUT / "partonomy"
    if not (data_dir / "data" / "toy").exists():
        dataset_cli.main(
            ["build", "--config", "toy", "--out", str(data_dir), "--toy-num-images", str(args.toy_images)]
        )
    validation = datasets.load_dataset(str(data_dir), "toy", split="validation")
    rows = list(validation.select(range(min(len(validation), args.eval_questions))))

    untrained, processor = build_tiny()
    print("evaluating the untrained model …")
    results = {
        "untrained": trainer.evaluate_model(untrained, processor, rows),
        "whole_object_baseline": whole_object_baseline(rows),
    }

    run_dir = OUT / "run"
    result = trainer.train(
        *trainer.parse_args(
            [
                "--dataset",
                str(data_dir),
                "--configs",
                "toy",
                "--output_dir",
                str(run_dir),
                "--per_device_train_batch_size",
                "8",
                "--gradient_accumulation_steps",
                "1",
                "--max_steps",
                str(args.train_steps),
                "--max_train_seconds",
                str(args.train_seconds),
                "--learning_rate",
                str(args.learning_rate),
                "--save_steps",
                "0",
                "--logging_steps",
                "25",
            ]
        )
    )
    export = Path(result["final_checkpoint"]) / "model"
    model = AutoModel.from_pretrained(
        str(export), trust_remote_code=True
    ).eval()  # the saved checkpoint loads
    processor = AutoProcessor.from_pretrained(str(export), trust_remote_code=True)
    print("evaluating the trained model …")
    results["trained"] = trainer.evaluate_model(model, processor, rows)
    results["trained"]["steps"] = result["history"][-1]["step"]

    first_of_each_image = list({row["image_id"]: row for row in reversed(rows)}.values())[::-1]
    for k, row in enumerate(first_of_each_image[:6]):
        batch = trainer.Collator(processor)([row])
        batch.pop("gt_masks")
        with torch.no_grad():
            masks = model(**batch).pred_masks[0] > model.config.mask_threshold
        overlay(
            row["image"],
            masks.numpy(),
            row["parts"],
            OUT / f"overlay_{k}_{row['object'].replace(' ', '_')}.png",
        )

    results["seconds"] = round(time.monotonic() - started, 1)
    (OUT / "demo_results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'':<22} {'micro-gIoU':>10} {'macro-gIoU':>10} {'choice acc.':>11}")
    for name in ("trained", "untrained", "whole_object_baseline"):
        r = results[name]
        accuracy = "-" if r["choice_accuracy"] is None else f"{r['choice_accuracy']:.3f}"
        print(f"{name:<22} {r['micro_giou']:>10.3f} {r['macro_giou']:>10.3f} {accuracy:>11}")
    print("\nper question type (trained):")
    for question_type, r in results["trained"]["per_type"].items():
        print(
            f"  {question_type:<15} micro {r['micro_giou']:.3f}  macro {r['macro_giou']:.3f}  "
            f"choice acc. {r['choice_accuracy']:.3f}  ({r['questions']} questions)"
        )
    print(
        f"\n{results['seconds']:.0f} s in all; overlays and demo_results.json in {OUT}/; checkpoint in {export}"
    )


if __name__ == "__main__":
    main()
