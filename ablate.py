"""`make ablate`: PLUM's design choices, each switched off, side by side on the toy set, on a CPU.

Stage 0 gives the tiny model a text ability to lose: it learns to name the category of the object in a toy image
("What kind of thing is in the image?" → "It is a vehicle."), a task the segmentation data never asks. The stage-0
checkpoint is saved once and every variant starts from it, fine-tunes for segmentation with the same number of
optimizer steps, and is measured on held-out toy questions: micro / macro gIoU of teacher-forced masks, answer-choice
accuracy, and the text task before and after (accuracy among the five categories, and the mean token negative
log-likelihood of the correct answer).

Variants (one switch each, PLUM's defaults otherwise): full PLUM; no feedback loop; LISA's `[SEG]` token instead of
the span tagger; λ_KL = 0 and 1 (0.1 is full PLUM); Dice instead of Focal-Tversky. Two fine-tunes run at once, one
thread each (the tiny model's small operations do not use a second thread).

    python ablate.py                 # the full run: 3 seeds, about 45 minutes on 2 cores
    python ablate.py --quick         # a few minutes: every variant, 1 seed, a handful of steps (the test suite)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np

OUT = Path("outputs")
TEXT_QUESTION = "What kind of thing is in the image?"

# name → (PlumConfig overrides, what the paper reports for it)
VARIANTS = {
    "full PLUM": ({}, "the reference row"),
    "no feedback loop": ({"use_feedback": False}, "lower gIoU (Fig. 5a: -6.5 micro / -6.3 macro)"),
    "[SEG] token (LISA)": (
        {"segmentation_query": "seg_token"},
        "lower gIoU and a weaker text ability (Fig. 5a, Table 5)",
    ),
    "λ_KL = 0": ({"kl_loss_weight": 0.0}, "higher gIoU, weaker text ability (Fig. 5b)"),
    "λ_KL = 1": ({"kl_loss_weight": 1.0}, "lower gIoU, stronger text ability (Fig. 5b)"),
    "Dice instead of Focal-Tversky": (
        {"use_focal_tversky": False},
        "lower gIoU (§4: FTL gives sharper masks)",
    ),
}


# ---------------------------------------------------------------------------------------------------- text task


def category_answer(category: str) -> str:
    from partonomy_dataset.templates import object_answer

    return object_answer(category)


def text_task(model, processor, rows, categories) -> dict:
    """Accuracy of naming the object's category among all categories, and the mean token negative log-likelihood of
    the correct answer (the same shared-prefix scoring as the benchmark's choices)."""
    from plum_training.scoring import PlumChoiceScorer

    scorer = PlumChoiceScorer(model.eval(), processor)
    choices = [category_answer(c) for c in categories]
    right, losses = [], []
    for row in rows:
        scores = scorer(row["image"], [(TEXT_QUESTION, None)], choices)
        truth = categories.index(row["object_category"])
        right.append(int(scores.argmax()) == truth)
        losses.append(-float(scores[truth]))
    return {"text_accuracy": float(np.mean(right)), "text_nll": float(np.mean(losses))}


def one_row_per_image(dataset, limit: int) -> list[dict]:
    rows, seen = [], set()
    for row in dataset:
        if row["image_id"] not in seen:
            seen.add(row["image_id"])
            rows.append(row)
        if len(rows) == limit:
            break
    return rows


def stage0(data_dir: Path, out: Path, steps: int, seed: int, text_rows: int) -> dict:
    """Teaches the tiny PLUM (with `[SEG]` in its vocabulary, so every variant shares the checkpoint) to name the
    category of the object, training LLaVA (CLIP, projector, LLaMA) on that text task alone; saves the checkpoint."""
    import datasets
    import torch
    from tqdm.auto import tqdm

    from modeling_plum.convert import build_tiny, save

    torch.manual_seed(seed)
    model, processor = build_tiny(seg_token=True)
    train = one_row_per_image(datasets.load_dataset(str(data_dir), "toy", split="train"), 10**9)
    held_out = one_row_per_image(datasets.load_dataset(str(data_dir), "toy", split="validation"), text_rows)
    categories = sorted({row["object_category"] for row in train})
    before = text_task(model, processor, held_out, categories)
    model.train()
    optimizer = torch.optim.AdamW(model.llava.parameters(), lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(steps), desc="stage 0: naming categories", leave=False):
        chunk = [train[i] for i in rng.choice(len(train), size=8, replace=False)]
        batch = processor(
            images=[row["image"] for row in chunk],
            conversations=[[(TEXT_QUESTION, category_answer(row["object_category"]))] for row in chunk],
        )
        batch.pop("spans")
        batch.pop("sam_pixel_values")
        out_ = model(**batch)
        out_.lm_loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = text_task(model, processor, held_out, categories)
    save(model.eval(), processor, out)
    return {"untrained": before, "stage0": after, "categories": categories}


# ---------------------------------------------------------------------------------------------------- variants


def fine_tune(job: dict) -> dict:
    """One variant and seed: segmentation fine-tune from the stage-0 checkpoint, then its measurements."""
    import datasets

    import train_accelerate as trainer
    from plum_training.loading import load_model_and_processor

    started = time.monotonic()
    overrides = VARIANTS[job["variant"]][0]
    result = trainer.train(
        *trainer.parse_args(
            [
                "--model_name_or_path",
                job["stage0"],
                "--trust_remote_code",
                "--config_overrides",
                json.dumps(overrides),
                "--dataset",
                job["data"],
                "--configs",
                "toy",
                "--output_dir",
                job["out"],
                "--per_device_train_batch_size",
                str(job["batch_size"]),
                "--gradient_accumulation_steps",
                "1",
                "--max_steps",
                str(job["steps"]),
                "--warmup_steps",
                str(min(100, max(1, job["steps"] // 10))),
                "--learning_rate",
                str(job["learning_rate"]),
                "--seed",
                str(job["seed"]),
                "--save_steps",
                "0",
                "--logging_steps",
                "1000",
                "--mixed_precision",
                "no",
            ]
        )
    )
    export = Path(result["final_checkpoint"]) / "model"
    model, processor = load_model_and_processor(str(export), trust_remote_code=True)
    validation = datasets.load_dataset(job["data"], "toy", split="validation")
    rows = list(validation.select(range(min(len(validation), job["questions"]))))
    measured = trainer.evaluate_model(model, processor, rows)
    text = text_task(model, processor, one_row_per_image(validation, job["text_rows"]), job["categories"])
    shutil.rmtree(job["out"], ignore_errors=True)  # checkpoints are not kept: the numbers are the output
    return {
        "variant": job["variant"],
        "seed": job["seed"],
        "micro_giou": measured["micro_giou"],
        "macro_giou": measured["macro_giou"],
        "choice_accuracy": measured["choice_accuracy"],
        **text,
        "steps": result["history"][-1]["step"],
        "seconds": round(time.monotonic() - started, 1),
    }


def _worker(job):
    # One thread per pool worker (they run side by side); set here, not in fine_tune, so that an in-process run
    # (`--parallel 1`, the tests) leaves the caller's thread count alone.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    return fine_tune(job)


# ---------------------------------------------------------------------------------------------------- report


def summarise(runs: list[dict], stage: dict) -> dict:
    metrics = ("micro_giou", "macro_giou", "choice_accuracy", "text_accuracy", "text_nll")
    table = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        table[variant] = {
            m: {"mean": float(np.mean([r[m] for r in mine])), "std": float(np.std([r[m] for r in mine]))}
            for m in metrics
        }
        table[variant]["seeds"] = len(mine)
        table[variant]["text_retention"] = table[variant]["text_accuracy"]["mean"] / max(
            stage["stage0"]["text_accuracy"], 1e-9
        )
    full = table.get("full PLUM")
    for variant, row in table.items():
        row["paper"] = VARIANTS[variant][1]
        row["agrees"] = agreement(variant, row, full)
    return table


def agreement(variant: str, row: dict, full: dict | None) -> str:
    """Whether the toy run moves in the paper's direction against full PLUM ("yes", "no", or "—")."""
    if full is None or variant == "full PLUM":
        return "—"

    def delta(metric):
        return row[metric]["mean"] - full[metric]["mean"]

    giou = delta("micro_giou") + delta("macro_giou")
    text = delta("text_accuracy") - delta("text_nll")  # better text: higher accuracy, lower NLL
    expected = {
        "no feedback loop": giou < 0,
        "[SEG] token (LISA)": giou < 0 and text < 0,
        "λ_KL = 0": giou > 0 and text < 0,
        "λ_KL = 1": giou < 0 and text > 0,
        "Dice instead of Focal-Tversky": giou < 0,
    }[variant]
    return "yes" if expected else "no"


def markdown(table: dict, stage: dict, settings: dict) -> str:
    def cell(row, metric, scale=100.0, digits=1):
        m = row[metric]
        return f"{scale * m['mean']:.{digits}f} ± {scale * m['std']:.{digits}f}"

    lines = [
        f"Toy set, tiny PLUM; {settings['seeds']} seed(s) per variant; each variant fine-tuned for "
        f"{settings['steps']} optimizer steps (batch {settings['batch_size']}, peak lr {settings['learning_rate']}) "
        f"from one stage-0 checkpoint; {settings['questions']} held-out questions, text task on "
        f"{settings['text_rows']} held-out images. Text task before fine-tuning: accuracy "
        f"{100 * stage['stage0']['text_accuracy']:.1f} %, NLL {stage['stage0']['text_nll']:.3f} (untrained: "
        f"{100 * stage['untrained']['text_accuracy']:.1f} %, {stage['untrained']['text_nll']:.3f}).",
        "",
        "| variant | micro-gIoU | macro-gIoU | choice acc. | text acc. | text NLL | paper | toy agrees |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for variant, row in table.items():
        lines.append(
            f"| {variant} | {cell(row, 'micro_giou')} | {cell(row, 'macro_giou')} | {cell(row, 'choice_accuracy')} | "
            f"{cell(row, 'text_accuracy')} | {cell(row, 'text_nll', 1.0, 3)} | {row['paper']} | {row['agrees']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few minutes: 1 seed, a few steps, few questions"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=400, help="optimizer steps per variant (the same for all)"
    )
    parser.add_argument("--stage0-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=6e-4)
    parser.add_argument("--questions", type=int, default=150, help="held-out toy questions per variant")
    parser.add_argument("--text-rows", type=int, default=100, help="held-out images for the text task")
    parser.add_argument("--toy-images", type=int, default=1200)
    parser.add_argument("--parallel", type=int, default=2, help="fine-tunes at once (one thread each)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.stage0_steps, args.questions, args.text_rows = 1, 3, 5, 6, 6
        args.toy_images, args.parallel = min(args.toy_images, 60), 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = out / ("partonomy" if not args.quick else "partonomy-ablate-quick")
    if not (data / "data" / "toy").exists():
        from partonomy_dataset import __main__ as dataset_cli

        code = dataset_cli.main(
            ["build", "--config", "toy", "--out", str(data), "--toy-num-images", str(args.toy_images)]
        )
        if code:
            raise SystemExit(code)
    stage0_dir = out / "ablation" / "stage0"
    stage = stage0(data, stage0_dir, args.stage0_steps, seed=0, text_rows=args.text_rows)
    print(
        f"stage 0: text task accuracy {stage['untrained']['text_accuracy']:.2f} → {stage['stage0']['text_accuracy']:.2f}"
    )
    jobs = [
        {
            "variant": variant,
            "seed": seed,
            "stage0": str(stage0_dir),
            "data": str(data),
            "out": str(out / "ablation" / "runs" / f"{variant}-{seed}".replace(" ", "_")),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "questions": args.questions,
            "text_rows": args.text_rows,
            "categories": stage["categories"],
        }
        for seed in range(args.seeds)
        for variant in VARIANTS
    ]
    if args.parallel > 1:
        with multiprocessing.get_context("spawn").Pool(args.parallel, maxtasksperchild=1) as pool:
            runs = []
            for run in pool.imap_unordered(_worker, jobs):
                runs.append(run)
                print(
                    f"  {run['variant']:<32} seed {run['seed']}: micro {run['micro_giou']:.3f} ({run['seconds']} s)"
                )
    else:
        runs = [fine_tune(job) for job in jobs]
    table = summarise(runs, stage)
    settings = {
        k: getattr(args, k)
        for k in ("seeds", "steps", "batch_size", "learning_rate", "questions", "text_rows")
    }
    result = {
        "settings": settings,
        "stage0": stage,
        "runs": runs,
        "table": table,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "ablation.json").write_text(json.dumps(result, indent=1))
    print(markdown(table, stage, settings))
    print(f"\n{result['seconds']:.0f} s in all; outputs in {out / 'ablation.json'}")
    return result


if __name__ == "__main__":
    main()
