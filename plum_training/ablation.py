"""`make ablate`: PLUM's mechanisms switched off one at a time, from one pretrained and converted tiny PLUM, with
intervals that say when an effect shows.

Every variant starts from the same converted stage-0 model (`plum_training.stage0` → `modeling_plum.convert`), is
fine-tuned with the same number of optimizer updates, and is measured through the one evaluation path: micro / macro gIoU
and the paper's text columns on held-out toy questions, and text retention on what stage 0 taught (naming the object
among all toy objects: accuracy and the mean NLL of the correct answer, before and after the fine-tune). Each seed of
a variant is paired with the same seed of full PLUM (the same data order); the table reports each variant's mean with
a 95 % t-interval and the mean paired difference from full PLUM with its interval, and a verdict per effect the paper
reports: "agrees" when the difference's interval excludes 0 in the paper's direction, "disagrees" when it excludes 0
the other way, "unresolved" otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from partonomy_dataset import atomic

# name → (PlumConfig overrides, {metric: the paper's direction against full PLUM}, the paper's claim)
VARIANTS = {
    "full PLUM": ({}, {}, "the reference row (λ_KL = 0.1)"),
    "no feedback loop": ({"use_feedback": False}, {"micro_giou": -1}, "lower gIoU (Fig. 5a: -6.5 micro)"),
    "[SEG] token (LISA)": (
        {"segmentation_query": "seg_token"},
        {"micro_giou": -1, "answer_nll": +1},
        "lower gIoU and a weaker text ability (Fig. 5a, Table 5)",
    ),
    "λ_KL = 0": (
        {"kl_loss_weight": 0.0},
        {"micro_giou": +1, "answer_nll": +1},
        "higher gIoU, weaker text (Fig. 5b)",
    ),
    "λ_KL = 1": (
        {"kl_loss_weight": 1.0},
        {"micro_giou": -1, "answer_nll": -1},
        "lower gIoU, stronger text (Fig. 5b)",
    ),
    "λ_KL = 10": (
        {"kl_loss_weight": 10.0},
        {"micro_giou": -1, "answer_nll": -1},
        "lower gIoU, stronger text (Fig. 5b)",
    ),
    "Dice instead of Focal-Tversky": (
        {"use_focal_tversky": False},
        {"micro_giou": -1},
        "lower gIoU (§4: FTL gives sharper masks)",
    ),
}
KL_SWEEP = {"λ_KL = 0": 0.0, "full PLUM": 0.1, "λ_KL = 1": 1.0, "λ_KL = 10": 10.0}  # Fig. 5b's trade-off
METRICS = ("micro_giou", "macro_giou", "naming_accuracy", "answer_nll")


@dataclass
class AblationSettings:
    seeds: int = 5
    steps: int = 500
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    questions: int = 150
    naming_images: int = 120
    parallel: int = 2
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))


# ---------------------------------------------------------------------------------------------------- statistics


def interval(values, confidence: float = 0.95) -> dict:
    """Mean and the `confidence` t-interval of the mean (half-width 0 for a single value: no interval)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": len(values)}
    half = float(
        stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    )
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def verdict(difference: dict, direction: int) -> str:
    """ "agrees" when the interval of (variant − full PLUM) excludes 0 on the side of `direction` (+1: higher, -1:
    lower), "disagrees" when it excludes 0 on the other side, "unresolved" when it covers 0 (or has one seed)."""
    if difference["n"] < 2 or difference["low"] <= 0 <= difference["high"]:
        return "unresolved"
    higher = difference["low"] > 0
    return "agrees" if higher == (direction > 0) else "disagrees"


def paired_differences(runs: list[dict], variant: str, metric: str) -> list[float]:
    """`metric` of the variant minus that of full PLUM, per seed both have."""
    full = {r["seed"]: r[metric] for r in runs if r["variant"] == "full PLUM"}
    return [r[metric] - full[r["seed"]] for r in runs if r["variant"] == variant and r["seed"] in full]


def summarise(runs: list[dict]) -> dict:
    """Per variant: each metric's mean and interval, each paired difference from full PLUM with its interval, and the
    verdict on every effect the paper reports for it."""
    table = {}
    for variant, (_, directions, claim) in VARIANTS.items():
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        row = {"seeds": len(mine), "paper": claim, "metrics": {}, "differences": {}, "verdicts": {}}
        for metric in METRICS:
            row["metrics"][metric] = interval([r[metric] for r in mine])
            if variant != "full PLUM":
                row["differences"][metric] = interval(paired_differences(runs, variant, metric))
        for metric, direction in directions.items():
            row["verdicts"][metric] = verdict(row["differences"][metric], direction)
        table[variant] = row
    return table


# ---------------------------------------------------------------------------------------------------- runs


def job_key(job: dict) -> str:
    return f"{job['variant']}|{job['seed']}"


def read_runs(path: Path) -> list[dict]:
    """Finished (variant, seed) results kept by an earlier, interrupted run. A torn line (a run killed mid-write) is
    left out, and the file rewritten without it (atomically) so that new results append cleanly."""
    if not path.exists():
        return []
    runs, lines = [], path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if len(runs) < len(lines) or (lines and not path.read_text(encoding="utf-8").endswith("\n")):
        atomic.write_lines(path, (json.dumps(r) for r in runs))
    return runs


def fine_tune(job: dict) -> dict:
    """One variant and seed: the fine-tune from the converted stage-0 model, then its measurements."""
    import datasets

    from partonomy_dataset.sources import toy

    from . import evaluation
    from .arguments import DataArguments, ModelArguments, TrainArguments
    from .loading import load_model_and_processor
    from .trainer import PlumTrainer

    settings = AblationSettings(**job["settings"])
    overrides = dict(VARIANTS[job["variant"]][0])
    if overrides.get("segmentation_query") == "seg_token":
        overrides["seg_token_index"] = job["seg_token_index"]
    result = PlumTrainer(
        ModelArguments(
            model_name_or_path=job["base"], trust_remote_code=True, config_overrides=json.dumps(overrides)
        ),
        DataArguments(dataset=job["data"], configs=["toy"]),
        TrainArguments(
            output_dir=job["out"],
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=1,
            max_steps=settings.steps,
            warmup_steps=settings.warmup_steps,
            learning_rate=settings.learning_rate,
            seed=job["seed"],
            save_steps=0,
            logging_steps=100,
            mixed_precision="no",
            sam_embedding_cache=10_000,
        ),
    ).train()
    model, processor = load_model_and_processor(f"{result['final_checkpoint']}/model", trust_remote_code=True)
    validation = list(datasets.load_dataset(job["data"], "toy", split="validation"))
    records, _ = evaluation.predict(model, processor, validation[: settings.questions], progress=False)
    scored = evaluation.score(validation[: settings.questions], records)
    naming_rows = evaluation.one_row_per_image(validation)[: settings.naming_images]
    naming = evaluation.object_naming(model, processor, naming_rows, sorted(toy.OBJECTS))
    return {
        "variant": job["variant"],
        "seed": job["seed"],
        **scored["overall"],
        "naming_accuracy": naming["naming_accuracy"],
        "answer_nll": naming["answer_nll"],
        "text": scored["text"],
        "steps": result["history"][-1]["step"],
        "seconds": result["training_seconds"],
    }


def worker(job: dict) -> dict:
    # one thread per fine-tune: two run side by side on the two cores
    os.environ["OMP_NUM_THREADS"] = "1"
    import shutil

    import torch

    torch.set_num_threads(1)
    try:
        return fine_tune(job)
    finally:
        shutil.rmtree(job["out"], ignore_errors=True)  # the numbers are the output, not the checkpoints


def plan(settings: AblationSettings, base: str, data: str, out: Path, seg_token_index: int) -> list[dict]:
    """Every (variant, seed), seeds outermost so that an interrupted run has whole seeds of every variant."""
    return [
        {
            "variant": variant,
            "seed": seed,
            "base": base,
            "data": data,
            "out": str(out / "runs" / f"{variant}-{seed}".replace(" ", "_")),
            "seg_token_index": seg_token_index,
            "settings": asdict(settings),
        }
        for seed in range(settings.seeds)
        for variant in settings.variants
    ]


def run_plan(jobs: list[dict], results: Path, parallel: int) -> list[dict]:
    """Runs the jobs `results` does not hold yet, `parallel` at a time, appending each result as it finishes; a
    progress bar over the whole plan shows the ETA. Returns every result, earlier ones included."""
    import multiprocessing

    from tqdm.auto import tqdm

    runs = read_runs(results)
    done = {f"{r['variant']}|{r['seed']}" for r in runs}
    todo = [job for job in jobs if job_key(job) not in done]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="ablation (variant x seed)", unit="run")
    with results.open("a", encoding="utf-8") as f:

        def keep(run: dict):
            f.write(json.dumps(run) + "\n")
            f.flush()  # a killed ablation restarts where it stopped
            runs.append(run)
            bar.set_postfix_str(f"{run['variant']} seed {run['seed']}: micro {run['micro_giou']:.3f}")
            bar.update(1)

        if parallel > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(parallel, maxtasksperchild=1) as pool:
                for run in pool.imap_unordered(worker, todo):
                    keep(run)
        else:
            for job in todo:
                keep(fine_tune(job))
    bar.close()
    return runs


def trade_off_points(table: dict, before: dict) -> list[dict]:
    """Fig. 5b: per λ_KL, micro-gIoU and text retention (naming accuracy after / before the fine-tune), with intervals."""
    points = []
    for variant, weight in KL_SWEEP.items():
        if variant not in table:
            continue
        giou, naming = table[variant]["metrics"]["micro_giou"], table[variant]["metrics"]["naming_accuracy"]
        scale = max(before["naming_accuracy"], 1e-9)
        retention = {k: naming[k] / scale for k in ("mean", "low", "high")}
        points.append(
            {"variant": variant, "kl_loss_weight": weight, "micro_giou": giou, "retention": retention}
        )
    return points


# ---------------------------------------------------------------------------------------------------- setup and report


def prepare(out: Path, toy_images: int, stage0_settings) -> tuple[str, str, int, dict]:
    """The toy set, the converted stage-0 model (shared by every variant), the [SEG] token's id and the base model's
    text abilities (what retention is measured against)."""
    from transformers import AutoTokenizer

    from modeling_plum.convert import SEG_TOKEN
    from plum_demo.pipeline import DemoSettings, build_toy, convert

    from . import stage0

    data = build_toy(DemoSettings(out=str(out), toy_images=toy_images))
    pretrained = stage0.run_stage0(out / "stage0", stage0_settings)
    base = out / "ablation" / "base"
    if not (base / "config.json").exists():
        convert(pretrained, base)
    seg_token_index = AutoTokenizer.from_pretrained(base, trust_remote_code=True).convert_tokens_to_ids(
        SEG_TOKEN
    )
    return str(base), str(data), seg_token_index, base_text(base, data)


def base_text(base: Path, data: Path) -> dict:
    import datasets

    from partonomy_dataset.sources import toy

    from . import evaluation
    from .loading import load_model_and_processor

    model, processor = load_model_and_processor(str(base), trust_remote_code=True)
    validation = evaluation.one_row_per_image(datasets.load_dataset(str(data), "toy", split="validation"))
    return evaluation.object_naming(model, processor, validation[:120], sorted(toy.OBJECTS))


def markdown(table: dict, before: dict, settings: dict) -> str:
    def cell(value, scale=100.0, digits=1):
        return f"{scale * value['mean']:.{digits}f} [{scale * value['low']:.{digits}f}, {scale * value['high']:.{digits}f}]"

    lines = [
        f"{settings['seeds']} seeds per variant, {settings['steps']} optimizer updates each (batch "
        f"{settings['batch_size']}, peak lr {settings['learning_rate']}) from one converted stage-0 model; "
        f"{settings['questions']} held-out questions; naming on {settings['naming_images']} held-out images (before the "
        f"fine-tune: accuracy {100 * before['naming_accuracy']:.1f} %, NLL {before['answer_nll']:.3f}). Means with 95 % "
        "t-intervals; Δ = variant − full PLUM, paired by seed.",
        "",
        "| variant | micro-gIoU | Δ micro-gIoU | naming acc. | NLL | Δ NLL | paper | toy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in table.items():
        m, d = row["metrics"], row["differences"]
        verdicts = ", ".join(f"{k}: {v}" for k, v in row["verdicts"].items()) or "—"
        delta_giou = cell(d["micro_giou"]) if d else "—"
        delta_nll = cell(d["answer_nll"], 1.0, 3) if d else "—"
        lines.append(
            f"| {variant} | {cell(m['micro_giou'])} | {delta_giou} | {cell(m['naming_accuracy'])} | "
            f"{cell(m['answer_nll'], 1.0, 3)} | {delta_nll} | {row['paper']} | {verdicts} |"
        )
    return "\n".join(lines)
