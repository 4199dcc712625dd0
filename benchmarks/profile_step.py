"""Where one training step of PLUM goes, by component, on the toy set (batch 8, as `make demo` trains): data
collation, CLIP, projector, LLaMA (student), the KL teacher's forward, span tagger, SAM image encoder (or the SAM
embedding cache), mask decoder, feedback pooler, losses, backward, gradient clipping and the optimizer step.

    python benchmarks/profile_step.py [--steps 20] [--batch-size 8]          # the tiny preset (SAM encoder trained)
    python benchmarks/profile_step.py --model stage0 --sam-embedding-cache   # the demo's kind of model, as it trains

Forward times come from hooks on the modules and timers around the model's methods (the KL teacher is the same LLaMA
with its adapters off, timed around the teacher call; the feedback pooler encodes each mask once, when it is
predicted, and pools the earlier ones for each later span); "other forward" is the rest of the forward (span-query
means, mask post-processing, losses).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import add_out_argument, converted_stage0, write_results  # noqa: E402
from partonomy_dataset import __main__ as dataset_cli  # noqa: E402
from plum_training import trainer  # noqa: E402
from plum_training.arguments import ModelArguments  # noqa: E402
from plum_training.data import Collator  # noqa: E402
from plum_training.embedding_cache import ImageEmbeddingCache  # noqa: E402
from plum_training.loading import load_model_and_processor  # noqa: E402


class Timers:
    def __init__(self):
        self.seconds = defaultdict(float)
        self._started = {}

    def hook(self, model_module, name):
        def pre(_module, _inputs):
            self._started[name] = time.perf_counter()

        def post(_module, _inputs, _outputs):
            self.seconds[name] += time.perf_counter() - self._started.pop(name)

        model_module.register_forward_pre_hook(pre)
        model_module.register_forward_hook(post)


def instrument(base, timers: Timers):
    """Hooks `timers` onto the model's components (module hooks, and wrappers around the KL teacher, SAM's encoder and
    the feedback pooler); returns a function that takes the wrappers off again."""
    for name, module in (
        ("CLIP vision tower", base.llava.model.vision_tower),
        ("projector", base.llava.model.multi_modal_projector),
        ("LLaMA", base.llava.model.language_model),
        ("span tagger", base.span_tagger),
        # `segmentation_plum.decode_one_prompt_per_image` runs these three of SAM's decoder
        ("mask decoder", base.sam_mask_decoder.transformer),
        ("mask decoder", base.sam_mask_decoder.output_upscaling),
        ("mask decoder", base.sam_mask_decoder.output_hypernetworks_mlps[0]),
    ):
        timers.hook(module, name)
    original_teacher, original_embed = base._teacher_hidden_states, base.get_image_embeddings

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers.seconds[name] += time.perf_counter() - started

        return wrapper

    base._teacher_hidden_states = timed("KL teacher forward", original_teacher)
    base.get_image_embeddings = timed("SAM image encoder (all)", original_embed)
    pooler = base.feedback_pooler
    if pooler is not None:
        original_encode, original_pool = pooler.encode, pooler.pool
        pooler.encode, pooler.pool = (
            timed("feedback pooler", original_encode),
            timed("feedback pooler", original_pool),
        )

    def restore():
        base._teacher_hidden_states, base.get_image_embeddings = original_teacher, original_embed
        if pooler is not None:
            pooler.encode, pooler.pool = original_encode, original_pool

    return restore


def profile(
    model, processor, rows, steps: int, batch_size: int, embeddings=None, max_grad_norm: float = 1.0
) -> tuple[dict, float]:
    """Seconds per step by component over `steps` steps (after 2 warm-up steps), and steps/s. A step is the trainer's:
    collation, forward, backward, gradient clipping, AdamW (foreach) step. With `embeddings` (an
    `ImageEmbeddingCache` of `model`) the SAM embeddings come from the cache, as in training with a frozen SAM encoder;
    every timed image is encoded before the clock starts (a run after its first epoch)."""
    base = model.get_base_model()
    timers = Timers()
    restore = instrument(base, timers)
    collator = Collator(processor, keep_images=embeddings is not None)
    chunks = [
        [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)] for step in range(steps + 2)
    ]
    if embeddings is not None:
        for chunk in chunks:
            batch = collator(chunk)
            embeddings.embeddings(batch["images"], batch["sam_pixel_values"])
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, foreach=True)
    model.train()
    total = 0.0
    for step, chunk in enumerate(chunks):
        if step == 2:
            timers.seconds.clear()
            total = 0.0
        started = time.perf_counter()
        t = time.perf_counter()
        batch = collator(chunk)
        timers.seconds["data collation"] += time.perf_counter() - t
        t = time.perf_counter()
        if embeddings is not None:
            batch["image_embeddings"] = embeddings.embeddings(
                batch.pop("images"), batch.pop("sam_pixel_values")
            )
            timers.seconds["SAM embedding cache lookup"] += time.perf_counter() - t
        t = time.perf_counter()
        out = model(**batch)
        timers.seconds["forward (all)"] += time.perf_counter() - t
        t = time.perf_counter()
        out.loss.backward()
        timers.seconds["backward"] += time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        timers.seconds["optimizer step"] += time.perf_counter() - t
        total += time.perf_counter() - started
    restore()
    per_step = {k: v / steps for k, v in timers.seconds.items()}
    # the LLaMA hook also fires inside the teacher: count that time once, as the teacher's
    per_step["LLaMA"] -= per_step.get("KL teacher forward", 0.0)
    # with the cache, encoder calls (none once every image is in) happen inside the lookup: count them once
    per_step["SAM image encoder"] = per_step.pop("SAM image encoder (all)", 0.0)
    if embeddings is not None:
        per_step["SAM embedding cache lookup"] -= per_step["SAM image encoder"]
    return per_step, steps / total


COMPONENTS_IN_FORWARD = [
    "CLIP vision tower",
    "projector",
    "LLaMA",
    "KL teacher forward",
    "span tagger",
    "SAM image encoder",
    "mask decoder",
    "feedback pooler",
]


def components(per_step: dict) -> dict:
    """`profile`'s seconds per step → {component: seconds} in table order, "other forward" being what the forward
    spends outside the timed modules, and "step" the sum."""
    per_step = dict(per_step)
    forward = per_step.pop("forward (all)")
    rows = {k: per_step.get(k, 0.0) for k in COMPONENTS_IN_FORWARD}
    rows["other forward (queries, post-processing, losses)"] = forward - sum(rows.values())
    rows.update({k: per_step.get(k, 0.0) for k in ("backward", "optimizer step", "data collation")})
    if "SAM embedding cache lookup" in per_step:
        rows["SAM embedding cache lookup"] = per_step["SAM embedding cache lookup"]
    rows["step"] = sum(rows.values())
    return rows


def table(per_step: dict, steps_per_second: float, batch_size: int | None = None) -> str:
    rows = components(per_step)
    step = rows.pop("step")
    lines = [f"{'component':<50} {'ms/step':>8} {'share':>6}"]
    lines += [f"{name:<50} {1000 * value:>8.1f} {100 * value / step:>5.1f}%" for name, value in rows.items()]
    speed = f"{steps_per_second:.2f} steps/s"
    if batch_size:
        speed += f", {steps_per_second * batch_size:.1f} samples/s"
    lines.append(f"{'step':<50} {1000 * step:>8.1f}  ({speed})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny (the preset, SAM's encoder trained), stage0 (a converted stage-0-like PLUM, SAM's encoder frozen, "
        "built once into outputs/bench/inputs), or a PLUM folder",
    )
    parser.add_argument(
        "--sam-embedding-cache",
        action="store_true",
        help="SAM embeddings from an ImageEmbeddingCache (needs a frozen SAM encoder), as training with "
        "--sam_embedding_cache",
    )
    add_out_argument(parser, __file__)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = ROOT / "outputs" / "partonomy"
    if not (data / "data" / "toy").exists():
        dataset_cli.main(["build", "--config", "toy", "--out", str(data)])
    import datasets

    rows = list(datasets.load_dataset(str(data), "toy", split="train").select(range(400)))
    if args.model == "tiny":
        model, processor = load_model_and_processor("tiny")
    else:
        path = str(converted_stage0()) if args.model == "stage0" else args.model
        model, processor = load_model_and_processor(path, trust_remote_code=True)
    embeddings = None
    if args.sam_embedding_cache:
        if model.config.train_sam_image_encoder:
            parser.error(f"{args.model} trains SAM's image encoder: its embeddings cannot be cached")
        embeddings = ImageEmbeddingCache(model, capacity=len(rows))
    model = trainer.prepare_trainable(model, ModelArguments())
    per_step, speed = profile(model, processor, rows, args.steps, args.batch_size, embeddings)
    name = "tiny PLUM" if args.model == "tiny" else f"PLUM {args.model}"
    cache = ", SAM embeddings cached" if embeddings is not None else ""
    print(
        f"{name}, toy set, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads{cache}"
    )
    print(table(per_step, speed, args.batch_size))
    settings = {
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "sam_embedding_cache": args.sam_embedding_cache,
    }
    results = {
        "steps_per_s": speed,
        "samples_per_s": speed * args.batch_size,
        "ms_per_step": {k: 1000 * v for k, v in components(per_step).items()},
    }
    return write_results(args.out, settings, results)


if __name__ == "__main__":
    main()
