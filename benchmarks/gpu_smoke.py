"""PLUM at full 7B geometry with random weights on one device: training steps/s and peak memory with and without
gradient checkpointing, and evaluation questions/s (five choices scored with the shared prefix, then the correct
answer's parts segmented).

    python benchmarks/gpu_smoke.py                                   # one GPU, bf16, all 32 layers
    python benchmarks/gpu_smoke.py --layers 1 --device cpu --dtype float32 --steps 1 --questions 1   # CPU check

Shapes are a real PARTONOMY training sample: 576 image tokens, a ~70-token question + answer with five part spans,
a 480 x 640 image (SAM input 1024 x 1024, CLIP 336 x 336), five ground-truth masks. The model is built the way
training uses it: LoRA on q/v, trainable heads and SAM decoder in float32, the frozen base in `--dtype`, autocast.
`--layers N` cuts every stack (LLaMA, CLIP, SAM's encoder) to N blocks, keeping every width.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_out_argument, write_results  # noqa: E402
from modeling_plum import PlumConfig, PlumForConditionalGeneration  # noqa: E402
from modeling_plum.processing_plum import IGNORE_INDEX, TAG_B, TAG_I, TAG_O  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
NUM_PARTS, PART_TOKENS, TEXT_TOKENS = 5, 2, 70
IMAGE_SIZE = (480, 640)


def build(preset: str, layers: int | None, dtype, device, seed: int = 0):
    config = PlumConfig.from_preset(preset)
    if layers:
        config.text_config.num_hidden_layers = layers
        config.llava_config.vision_config.num_hidden_layers = layers
        config.sam_encoder_depth = layers
        config.sam_global_attn_indexes = [layers - 1]
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: a 7B model in float32 would double the memory
    try:
        with torch.device(device):
            model = PlumForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def sample(config, batch: int, device):
    """Random token ids laid out like a PARTONOMY conversation, with span labels, LM labels and masks."""
    generator = torch.Generator().manual_seed(0)
    vocab = config.text_config.vocab_size
    image_tokens = config.llava_config.image_seq_length
    prompt = 1 + image_tokens + TEXT_TOKENS // 2
    length = prompt + TEXT_TOKENS // 2
    ids = torch.randint(3, min(vocab, 32000), (batch, length), generator=generator)
    ids[:, 0] = 1
    ids[:, 1 : 1 + image_tokens] = config.image_token_index
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, prompt:] = ids[:, prompt:]
    span_labels = torch.full_like(ids, IGNORE_INDEX)
    span_labels[:, prompt:] = TAG_O
    for k in range(NUM_PARTS):
        start = prompt + 8 + 4 * k
        span_labels[:, start] = TAG_B
        span_labels[:, start + 1 : start + PART_TOKENS] = TAG_I
    clip = config.llava_config.vision_config.image_size
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "span_labels": span_labels.to(device),
        "pixel_values": torch.randn(batch, 3, clip, clip, generator=generator).to(device),
        "sam_pixel_values": torch.randn(
            batch, 3, config.sam_image_size, config.sam_image_size, generator=generator
        ).to(device),
        "original_sizes": torch.tensor([IMAGE_SIZE] * batch),
        "resized_sizes": torch.tensor([(768, 1024)] * batch),
        "gt_masks": [(torch.rand(NUM_PARTS, *IMAGE_SIZE, generator=generator) > 0.7).float().to(device)]
        * batch,
    }


def peak_memory(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    with open("/proc/self/status") as status:  # this process's peak RSS (VmHWM), GiB
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024**2


def autocast(device, dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_steps(args, device, dtype, checkpointing: bool) -> dict:
    from plum_training import trainer
    from plum_training.arguments import ModelArguments

    model = build(args.preset, args.layers, dtype, device)
    model = trainer.prepare_trainable(model, ModelArguments(gradient_checkpointing=checkpointing))
    trainer.upcast_trainable(model)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=3e-4, betas=(0.9, 0.95)
    )
    batch = sample(model.config, args.batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps + 1):  # the first step warms up (allocator, kernels)
        started = time.perf_counter()
        with autocast(device, dtype):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    measured = times[1:] or times
    result = {
        "steps_per_s": len(measured) / sum(measured),
        "peak_memory_gib": peak_memory(device),
        "loss": float(loss.detach()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


@torch.no_grad()
def eval_questions(args, device, dtype) -> dict:
    model = build(args.preset, args.layers, dtype, device).eval()
    batch = sample(model.config, 1, device)
    prompt_length = 1 + model.config.llava_config.image_seq_length + TEXT_TOKENS // 2
    choices = [torch.randint(3, 32000, (20 + k,)).tolist() for k in range(5)]
    spans = [(prompt_length + 8 + 4 * k, prompt_length + 8 + 4 * k + PART_TOKENS) for k in range(NUM_PARTS)]
    times = []
    for _ in range(args.questions + 1):
        started = time.perf_counter()
        with autocast(device, dtype):
            model.score_choices(batch["input_ids"][:, :prompt_length], None, batch["pixel_values"], choices)
            embeddings = model.get_image_embeddings(batch["sam_pixel_values"])
            model.segment_spans(
                batch["input_ids"],
                batch["attention_mask"],
                batch["pixel_values"],
                spans,
                IMAGE_SIZE,
                (768, 1024),
                image_embeddings=embeddings,
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    measured = times[1:] or times
    return {"questions_per_s": len(measured) / sum(measured)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="plum-7b")
    parser.add_argument(
        "--layers", type=int, help="cut every stack to this many blocks (default: full depth)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--steps", type=int, default=5, help="timed training steps after one warm-up step (0: time that one)"
    )
    parser.add_argument(
        "--questions",
        type=int,
        default=5,
        help="timed evaluation questions after one warm-up (0: time that one)",
    )
    add_out_argument(parser, __file__)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    results = {
        "device": name,
        "preset": args.preset,
        "layers": args.layers or "all",
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "train": {},
    }
    for checkpointing in (False, True):
        results["train"]["checkpointing" if checkpointing else "plain"] = train_steps(
            args, device, dtype, checkpointing
        )
    results["eval"] = eval_questions(args, device, dtype)
    memory = "peak GPU memory" if device.type == "cuda" else "peak process RSS"
    print(f"{name}, {args.preset} ({results['layers']} layers), {args.dtype}, batch {args.batch_size}")
    for label, r in results["train"].items():
        print(
            f"  training ({label:>13}): {r['steps_per_s']:.3f} steps/s, {memory} {r['peak_memory_gib']:.1f} GiB, "
            f"{r['trainable_parameters']:,} of {r['parameters']:,} parameters trained"
        )
    print(f"  evaluation: {results['eval']['questions_per_s']:.3f} questions/s (5 choices + 5 part masks)")
    settings = {k: getattr(args, k) for k in ("preset", "layers", "device", "dtype", "batch_size", "steps")}
    return write_results(args.out, {**settings, "questions": args.questions}, results)


if __name__ == "__main__":
    main()
