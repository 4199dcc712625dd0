"""`make demo`: the whole PLUM pipeline on the procedural toy set, on a CPU, in under 10 minutes.

Builds the toy PARTONOMY config, profiles one training step by component, trains the tiny PLUM (LoRA on its LM, SAM
trained from scratch) for a fixed time budget with a learning rate that anneals to 0 as the budget runs out, evaluating
on held-out questions along the way (the learning curve), evaluates the result on held-out images beside the untrained
model and the whole-object baseline, writes overlay PNGs (ground truth beside prediction, per-part IoU) and
`outputs/demo_results.json`, and checks that the saved checkpoint loads with `AutoModel(trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoModel, AutoProcessor

import train_accelerate as trainer
from benchmarks.profile_step import profile, table
from metrics.giou import compute_giou
from partonomy_dataset import __main__ as dataset_cli
from partonomy_dataset import masks as rle
from plum_demo.drawing import ground_truth_beside_prediction, line_chart

OUT = Path("outputs")


def whole_object_baseline(rows) -> dict:
    """Predict the whole object (the union of its ground-truth parts) for every part."""
    predictions, references = [], []
    for row in rows:
        whole = rle.decode(rle.union(list(row["masks"])))
        predictions.append([whole] * len(row["masks"]))
        references.append(list(row["masks"]))
    giou = compute_giou(predictions, references)
    return {"micro_giou": giou["micro_giou"], "macro_giou": giou["macro_giou"], "choice_accuracy": None}


def step_profile(data_dir: Path, steps: int = 8) -> str:
    """The per-component step time of the tiny PLUM at the demo's batch size, as a table."""
    rows = list(datasets.load_dataset(str(data_dir), "toy", split="train").select(range(8 * (steps + 2))))
    model, processor = trainer.load_model_and_processor("tiny")
    model = trainer.prepare_trainable(model, trainer.ModelArguments())
    per_step, speed = profile(model, processor, rows, steps, 8)
    return table(per_step, speed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-images", type=int, default=1200)
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=450,
        help="training time budget; the learning rate reaches 0 at its end",
    )
    parser.add_argument("--eval-questions", type=int, default=200)
    parser.add_argument(
        "--curve-every", type=float, default=60, help="learning-curve point every this many seconds"
    )
    parser.add_argument(
        "--curve-questions", type=int, default=48, help="held-out questions per learning-curve point"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3, help="peak; the tiny model trains from scratch"
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

    profile_table = step_profile(data_dir)
    (OUT / "step_profile.txt").write_text(profile_table + "\n")
    print(profile_table)

    untrained, processor = trainer.load_model_and_processor("tiny")
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
                "1000000",  # the time budget ends the run, not a step count
                "--max_train_seconds",
                str(args.train_seconds),
                "--lr_schedule",
                "time",
                "--learning_rate",
                str(args.learning_rate),
                "--eval_every_seconds",
                str(args.curve_every),
                "--max_eval_samples",
                str(args.curve_questions),
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
    results["trained"]["training_seconds"] = result["training_seconds"]
    curve = [(0.0, results["untrained"]["micro_giou"])] + [
        (e["training_seconds"] / 60, e["micro_giou"]) for e in result["evals"]
    ]
    results["learning_curve"] = [{"minutes": round(m, 2), "micro_giou": g} for m, g in curve]
    line_chart(
        curve,
        f"micro-gIoU on {args.curve_questions} held-out toy questions while training",
        "training minutes",
        "micro-gIoU",
    ).save(OUT / "learning_curve.png")

    first_of_each_image = list({row["image_id"]: row for row in reversed(rows)}.values())[::-1]
    for k, row in enumerate(first_of_each_image[:6]):
        batch = trainer.Collator(processor)([row])
        batch.pop("gt_masks")
        with torch.no_grad():
            masks = model(**batch, output_logits=False).pred_masks[0] > model.config.mask_threshold
        truth = [rle.decode(m) for m in row["masks"]]
        ground_truth_beside_prediction(
            row["image"], truth, list(masks.cpu().numpy()), row["parts"], title=row["question"]
        ).save(OUT / f"overlay_{k}_{row['object'].replace(' ', '_')}.png")

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
        "\nlearning curve (training minutes → micro-gIoU): "
        + ", ".join(f"{m:.1f} → {g:.3f}" for m, g in curve)
    )
    print(
        f"\n{results['trained']['steps']} steps in {result['training_seconds']:.0f} s of training; "
        f"{results['seconds']:.0f} s in all; overlays, learning_curve.png, step_profile.txt and demo_results.json in "
        f"{OUT}/; checkpoint in {export}"
    )


if __name__ == "__main__":
    main()
