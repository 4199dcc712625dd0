"""Checkpoint and export sizes: measured for the tiny preset (a 2-step `train_accelerate.py` run), projected for plum-7b
and plum-13b from their trainable-parameter counts (LoRA r=8 on q/v, embeddings, LM head, SAM decoder and prompt
encoder, span tagger, query projector, feedback pooler), computed on the meta device.

A checkpoint holds the trainable parameters in float32 and AdamW's two float32 moments (12 bytes per trained
parameter) plus RNG / scheduler / position; an export holds every parameter in the model's dtype.

    python benchmarks/bench_checkpoints.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import add_out_argument, write_results  # noqa: E402
from modeling_plum import PlumConfig, PlumForConditionalGeneration  # noqa: E402
from partonomy_dataset import __main__ as dataset_cli  # noqa: E402
from plum_training import trainer  # noqa: E402
from plum_training.arguments import ModelArguments, parse_args  # noqa: E402

MIB, GIB = 1024**2, 1024**3


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def trainable_counts(preset: str) -> tuple[int, int]:
    """(trainable, total) parameters of a preset prepared for training, on the meta device."""
    if preset == "tiny":  # its vocabulary is its trained tokenizer's
        from modeling_plum.convert import build_tiny

        model = trainer.prepare_trainable(build_tiny()[0], ModelArguments())
    else:
        with torch.device("meta"):
            model = PlumForConditionalGeneration(PlumConfig.from_preset(preset))
            model = trainer.prepare_trainable(model, ModelArguments())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return trained, sum(p.numel() for p in model.parameters()) - lora


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out_argument(parser, __file__)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        dataset_cli.main(["build", "--config", "toy", "--out", str(data), "--toy-num-images", "20"])
        trainer.train(
            *parse_args(
                [
                    "--dataset",
                    str(data),
                    "--output_dir",
                    str(out),
                    "--max_steps",
                    "2",
                    "--per_device_train_batch_size",
                    "2",
                    "--gradient_accumulation_steps",
                    "1",
                ]
            )
        )
        final = out / "checkpoint-2"
        export = folder_bytes(final / "model")
        checkpoint = folder_bytes(final) - export
        weights = (final / "model.safetensors").stat().st_size
        optimizer = (final / "optimizer.bin").stat().st_size
    trained, total = trainable_counts("tiny")
    print(f"tiny (measured): {trained:,} of {total:,} parameters trained")
    print(
        f"  checkpoint {checkpoint / MIB:.1f} MiB (trained weights {weights / MIB:.1f} MiB, optimizer "
        f"{optimizer / MIB:.1f} MiB); export {export / MIB:.1f} MiB"
    )
    results = {
        "tiny": {
            "trained_parameters": trained,
            "parameters": total,
            "checkpoint_mib": checkpoint / MIB,
            "trained_weights_mib": weights / MIB,
            "optimizer_mib": optimizer / MIB,
            "export_mib": export / MIB,
        }
    }
    for preset in ("plum-7b", "plum-13b"):
        trained, total = trainable_counts(preset)
        checkpoint = trained * 12  # float32 weights + two float32 AdamW moments
        export = total * 2  # bf16
        full = checkpoint + (total - trained) * 2  # what a checkpoint with the frozen base in it would hold
        print(
            f"{preset} (projected): {trained:,} of {total:,} parameters trained; checkpoint ≈ {checkpoint / GIB:.1f} GiB "
            f"(≈ {full / GIB:.1f} GiB with the frozen base in it); export ≈ {export / GIB:.1f} GiB (bf16)"
        )
        results[preset] = {
            "trained_parameters": trained,
            "parameters": total,
            "checkpoint_gib": checkpoint / GIB,
            "checkpoint_with_base_gib": full / GIB,
            "export_bf16_gib": export / GIB,
        }
    settings = {"tiny_run": "2 steps, batch 2, toy set of 20 images", "projected_dtype": "bfloat16"}
    write_results(args.out, settings, results)


if __name__ == "__main__":
    main()
