"""`make demo`: the tiny PLUM made the way the real one is, trained, and measured the benchmark's way.

1. The toy PARTONOMY config (`python -m partonomy_dataset build --config toy`).
2. Stage 0 (`plum_training.stage0`): a tiny CLIP, LLaVA and SAM pretrained on a corpus of other toy images, saved as a
   LLaVA-HF folder and a segment_anything `.pth`.
3. Conversion, by the command a real checkpoint goes through: `python -m modeling_plum.convert --llava … --sam …`.
4. Stage 1, by the training command a user runs: `train_accelerate.py` (two gloo processes on a 2-core machine, one
   thread each): CLIP and projector frozen, LoRA on LLaMA, the tagger, SAM's decoder and the feedback loop trained,
   SAM's encoder frozen (its embeddings computed once per image), for a fixed time budget with a learning-curve
   evaluation every minute.
5. Evaluation through the one evaluation path (`plum_training.evaluation`) on held-out toy questions: the trained model,
   the same model with the image withheld (blind), the model before stage 1 (untrained), and the baselines: the
   part-frequency prior (no image, no model), the whole-object masks and the random choice; Table 2 / Table 3 columns into `demo_results.json`, overlays with the benchmark's pick beside
   the correct answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from partonomy_dataset import atomic
from plum_training.stage0 import Stage0Settings

ROOT = Path(__file__).resolve().parent.parent
TINY_HEADS = {
    "span_num_heads": 4,
    "span_ffn_dim": 256,
    "feedback_num_heads": 4,
}  # PLUM's new heads at tiny width


@dataclass
class DemoSettings:
    out: str = "outputs"
    toy_images: int = 1200
    stage0: Stage0Settings = field(default_factory=Stage0Settings)
    train_seconds: float = 180.0
    processes: int = 2
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    eval_questions: int = 600  # about half the validation split: identification alone gets ~130
    curve_every: float = 60.0
    curve_questions: int = 48
    overlays: int = 6


def _run(command: list[str], env: dict | None = None):
    """A command line of this project, as a user runs it; its output streams through."""
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, check=True)


def build_toy(settings: DemoSettings) -> Path:
    from partonomy_dataset.hub_folder import built_configs

    folder = Path(settings.out) / "partonomy"
    if "toy" not in built_configs(folder):
        command = ["-m", "partonomy_dataset", "build", "--config", "toy", "--out", str(folder)]
        _run([sys.executable, *command, "--toy-num-images", str(settings.toy_images)])
    return folder


def convert(stage0: dict, out: Path) -> Path:
    """The converted PLUM (stage 0's LLaVA and SAM), by `python -m modeling_plum.convert`."""
    command = [
        sys.executable,
        "-m",
        "modeling_plum.convert",
        "--llava",
        stage0["llava"],
        "--sam",
        stage0["sam"],
    ]
    command += ["--dtype", "float32", "--config-overrides", json.dumps(TINY_HEADS), "--out", str(out)]
    _run(command)
    return out


def fine_tune(base: Path, data: Path, run_dir: Path, settings: DemoSettings) -> Path:
    """Stage 1 by `train_accelerate.py` on `settings.processes` gloo processes; returns the final export."""
    arguments = [
        "--model_name_or_path",
        str(base),
        "--trust_remote_code",
        "--dataset",
        str(data),
        "--configs",
        "toy",
    ]
    arguments += ["--output_dir", str(run_dir), "--per_device_train_batch_size", str(settings.batch_size)]
    arguments += ["--gradient_accumulation_steps", "1", "--max_steps", "1000000", "--lr_schedule", "time"]
    arguments += [
        "--max_train_seconds",
        str(settings.train_seconds),
        "--learning_rate",
        str(settings.learning_rate),
    ]
    arguments += ["--warmup_steps", str(settings.warmup_steps), "--save_steps", "0", "--logging_steps", "25"]
    arguments += [
        "--eval_every_seconds",
        str(settings.curve_every),
        "--max_eval_samples",
        str(settings.curve_questions),
    ]
    arguments += ["--sam_embedding_cache", str(settings.toy_images), "--mixed_precision", "no"]
    script = str(ROOT / "train_accelerate.py")
    if settings.processes > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(settings.processes)]
        launch += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
        _run([*launch, script, *arguments], env={"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    else:
        _run([sys.executable, script, *arguments])
    from plum_training.checkpoints import checkpoints

    return checkpoints(run_dir)[-1] / "model"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learning_curve(run_dir: Path) -> list[dict]:
    """The in-training evaluations of a run (minutes of training and updates made → headline numbers), from its log
    history."""
    from plum_training.history import read_history

    return [
        {"minutes": round(r["training_seconds"] / 60, 2), "updates": r["step"], **r["eval"]}
        for r in read_history(run_dir / "log_history.jsonl")
        if "eval" in r
    ]


def run(settings: DemoSettings) -> dict:
    """The whole demo; returns (and writes) `demo_results.json`."""
    from plum_training import stage0

    started = time.monotonic()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_toy(settings)
    timings = {"toy": round(time.monotonic() - started, 1)}
    pretrained = stage0.run_stage0(out / "stage0", settings.stage0)
    timings["stage0"] = round(time.monotonic() - started - sum(timings.values()), 1)
    base = convert(pretrained, out / "plum-tiny-base")
    export = fine_tune(base, data, out / "run", settings)
    timings["stage1"] = round(time.monotonic() - started - sum(timings.values()), 1)
    results = measure(base, export, data, settings)
    results["stage0"] = pretrained
    results["learning_curve"] = learning_curve(out / "run")
    timings["evaluation"] = round(time.monotonic() - started - sum(timings.values()), 1)
    results["seconds"] = {**timings, "total": round(time.monotonic() - started, 1)}
    results["settings"] = asdict(settings)
    results["checkpoint"] = str(export)
    atomic.write_text(out / "demo_results.json", json.dumps(results, indent=1))
    from .report import learning_curve_png

    learning_curve_png(results, out / "learning_curve.png")
    return results


def measure(base: Path, export: Path, data: Path, settings: DemoSettings) -> dict:
    """Every row of the demo's tables, through the one evaluation path, on the first `eval_questions` held-out
    questions; the stage-0 text abilities of the base and the trained model; overlays of the trained model."""
    import datasets

    from partonomy_dataset.sources import toy
    from plum_training import evaluation
    from plum_training.loading import load_model_and_processor

    validation = datasets.load_dataset(str(data), "toy", split="validation")
    rows = list(validation.select(range(min(len(validation), settings.eval_questions))))
    labels = sorted(toy.OBJECTS)
    results = {"questions": len(rows)}
    for name, folder in (("untrained", base), ("trained", export)):
        model, processor = load_model_and_processor(str(folder), trust_remote_code=True)
        records, _ = evaluation.predict(model, processor, rows, progress=False)
        results[name] = evaluation.score(rows, records)
        results[name]["naming"] = evaluation.object_naming(model, processor, rows, labels)
        if name == "trained":
            blind, _ = evaluation.predict(model, processor, rows, blind=True, progress=False)
            results["blind"] = evaluation.score(rows, blind)
            results["blind"]["naming"] = evaluation.object_naming(model, processor, rows, labels, blind=True)
            from plum_demo.overlays import write_overlays

            write_overlays(rows, records, Path(settings.out), settings.overlays)
    train = datasets.load_dataset(str(data), "toy", split="train").select_columns(
        ["image_id", "object", "question_type", "parts"]
    )
    baselines = {
        "part-prior": evaluation.prior_records(list(train), rows),
        "whole-object": evaluation.whole_object_records(rows),
        "random": evaluation.random_records(rows),
    }
    for name, records in baselines.items():
        results[name] = {**evaluation.score(rows, records), "baseline": True}
    return results
