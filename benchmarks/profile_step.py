"""Where one training step of the tiny PLUM goes, by component, on the toy set (batch 8, as `make demo` trains):
data collation, CLIP, projector, LLaMA (student), the KL teacher's forward, span tagger, SAM image encoder, mask
decoder, feedback pooler, losses, backward and the optimizer step.

    python benchmarks/profile_step.py [--steps 20] [--batch-size 8]

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

from partonomy_dataset import __main__ as dataset_cli  # noqa: E402
from plum_training import trainer  # noqa: E402
from plum_training.arguments import ModelArguments  # noqa: E402
from plum_training.data import Collator  # noqa: E402
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


def profile(model, processor, rows, steps: int, batch_size: int) -> tuple[dict, float]:
    """Seconds per step by component over `steps` steps (after 2 warm-up steps), and steps/s."""
    base = model.get_base_model()
    timers = Timers()
    for name, module in (
        ("CLIP vision tower", base.llava.model.vision_tower),
        ("projector", base.llava.model.multi_modal_projector),
        ("LLaMA", base.llava.model.language_model),
        ("span tagger", base.span_tagger),
    ):
        timers.hook(module, name)
    original_teacher, original_embed, original_decode = (
        base._teacher_hidden_states,
        base.get_image_embeddings,
        base._decode_one_prompt_per_image,
    )

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
    base._decode_one_prompt_per_image = timed("mask decoder", original_decode)
    pooler = base.feedback_pooler
    original_encode, original_pool = pooler.encode, pooler.pool
    pooler.encode, pooler.pool = (
        timed("feedback pooler", original_encode),
        timed("feedback pooler", original_pool),
    )
    collator = Collator(processor)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    total = 0.0
    for step in range(steps + 2):
        if step == 2:
            timers.seconds.clear()
            total = 0.0
        started = time.perf_counter()
        chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        t = time.perf_counter()
        batch = collator(chunk)
        timers.seconds["data collation"] += time.perf_counter() - t
        t = time.perf_counter()
        out = model(**batch)
        timers.seconds["forward (all)"] += time.perf_counter() - t
        t = time.perf_counter()
        out.loss.backward()
        timers.seconds["backward"] += time.perf_counter() - t
        t = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        timers.seconds["optimizer step"] += time.perf_counter() - t
        total += time.perf_counter() - started
    base._teacher_hidden_states, base.get_image_embeddings, base._decode_one_prompt_per_image = (
        original_teacher,
        original_embed,
        original_decode,
    )
    pooler.encode, pooler.pool = original_encode, original_pool
    per_step = {k: v / steps for k, v in timers.seconds.items()}
    # the LLaMA hook also fires inside the teacher: count that time once, as the teacher's
    per_step["LLaMA"] -= per_step.get("KL teacher forward", 0.0)
    per_step["SAM image encoder"] = per_step.pop("SAM image encoder (all)")
    return per_step, steps / total


def table(per_step: dict, steps_per_second: float) -> str:
    forward = per_step.pop("forward (all)")
    inside = [
        "CLIP vision tower",
        "projector",
        "LLaMA",
        "KL teacher forward",
        "span tagger",
        "SAM image encoder",
        "mask decoder",
        "feedback pooler",
    ]
    rows = [(k, per_step.get(k, 0.0)) for k in inside]
    rows.append(("other forward (queries, post-processing, losses)", forward - sum(v for _, v in rows)))
    rows += [(k, per_step[k]) for k in ("backward", "optimizer step", "data collation")]
    step = forward + per_step["backward"] + per_step["optimizer step"] + per_step["data collation"]
    lines = [f"{'component':<50} {'ms/step':>8} {'share':>6}"]
    lines += [f"{name:<50} {1000 * value:>8.1f} {100 * value / step:>5.1f}%" for name, value in rows]
    lines.append(f"{'step':<50} {1000 * step:>8.1f}  ({steps_per_second:.2f} steps/s)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = ROOT / "outputs" / "partonomy"
    if not (data / "data" / "toy").exists():
        dataset_cli.main(["build", "--config", "toy", "--out", str(data)])
    import datasets

    rows = list(datasets.load_dataset(str(data), "toy", split="train").select(range(400)))
    model, processor = load_model_and_processor("tiny")
    model = trainer.prepare_trainable(model, ModelArguments())
    per_step, speed = profile(model, processor, rows, args.steps, args.batch_size)
    print(
        f"tiny PLUM, toy set, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads"
    )
    print(table(per_step, speed))


if __name__ == "__main__":
    main()
