"""Question + answer-mutation generation at full PARTONOMY scale (paper Table 8): 74,500 synthetic instances
over 606 objects, 975 part names and 13 categories, one instance per image. Masks are not needed to generate
questions, so none are drawn. Prints the time of each stage for `--num-proc` workers, and the speed-up
against one process measured side by side on a subset.

    python benchmarks/bench_questions.py [--instances 74500] [--num-proc 2] [--subset 20000]
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import add_out_argument, write_results  # noqa: E402
from partonomy_dataset.instances import Instance  # noqa: E402
from partonomy_dataset.questions import build_questions  # noqa: E402

NUM_OBJECTS, NUM_PARTS, NUM_CATEGORIES = 606, 975, 13


def synthetic_instances(num_instances: int, seed: int = 0) -> list[Instance]:
    rng = np.random.default_rng(seed)
    parts = [f"part {i}" for i in range(NUM_PARTS)]
    # Every part name belongs to a category and to at least one of its objects; objects have 3-6 parts
    # (Table 8: 2,507 object-part labels over 606 objects) and a few share parts across categories.
    category_parts = [parts[c::NUM_CATEGORIES] for c in range(NUM_CATEGORIES)]
    objects = []
    for o in range(NUM_OBJECTS):
        category = o % NUM_CATEGORIES
        own = category_parts[category]
        cover = own[(o // NUM_CATEGORIES) % len(own)]  # walks through the category's parts
        drawn = rng.choice(own, size=rng.integers(2, 5), replace=False).tolist()
        shared = [parts[rng.integers(NUM_PARTS)]] if rng.random() < 0.3 else []
        objects.append((f"object {o}", f"category {category}", sorted({cover, *drawn, *shared})))
    # Pool the leftovers: parts no object drew yet go to objects of their category.
    used = {p for _, _, ps in objects for p in ps}
    for k, part in enumerate(p for p in parts if p not in used):
        category = parts.index(part) % NUM_CATEGORIES
        index = category + NUM_CATEGORIES * (k % (NUM_OBJECTS // NUM_CATEGORIES))
        label, cat, ps = objects[index]
        objects[index] = (label, cat, sorted({*ps, part}))
    instances = []
    for i in range(num_instances):
        label, category, object_parts = objects[rng.integers(NUM_OBJECTS)]
        visible = rng.choice(object_parts, size=rng.integers(1, len(object_parts) + 1), replace=False)
        instances.append(
            Instance(
                source="bench",
                image_id=f"img{i:06d}",
                image_path="",
                width=500,
                height=375,
                object=label,
                category=category,
                parts={p: {} for p in sorted(visible)},
                object_mask={},
            )
        )
    return instances


def timed_build(instances, num_proc):
    start = time.perf_counter()
    rows, skipped, _ = build_questions(instances, seed=42, num_proc=num_proc)
    return time.perf_counter() - start, rows, skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=74500)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--subset", type=int, default=20000, help="instances built with 1 and N processes")
    add_out_argument(parser, __file__)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("partonomy_dataset.questions").setLevel(logging.INFO)  # prints each stage's time

    instances = synthetic_instances(args.instances)
    labels = {i.object for i in instances}
    parts = {p for i in instances for p in i.parts}
    print(
        f"{len(instances)} instances, {len(labels)} objects, {len(parts)} part names, "
        f"{len({i.category for i in instances})} categories"
    )

    seconds, rows, skipped = timed_build(instances, args.num_proc)
    print(
        f"whole set, --num-proc {args.num_proc}: {len(rows)} questions in {seconds:.1f} s "
        f"({len(rows) / seconds:,.0f} questions/s); not asked: {dict(skipped)}"
    )

    subset = instances[: args.subset]
    one, rows_one, _ = timed_build(subset, 1)
    many, rows_many, _ = timed_build(subset, args.num_proc)
    assert rows_one == rows_many, "the result must not depend on the number of processes"
    print(
        f"side by side on {len(subset)} instances: 1 process {one:.1f} s, {args.num_proc} processes "
        f"{many:.1f} s -> {one / many:.2f}x (identical questions)"
    )
    write_results(
        args.out,
        {"instances": args.instances, "num_proc": args.num_proc, "subset": len(subset)},
        {
            "instances": len(instances),
            "objects": len(labels),
            "part_names": len(parts),
            "categories": len({i.category for i in instances}),
            "whole_set": {
                "questions": len(rows),
                "seconds": seconds,
                "questions_per_s": len(rows) / seconds,
                "not_asked": dict(skipped),
            },
            "side_by_side": {
                "instances": len(subset),
                "one_process_seconds": one,
                "num_proc_seconds": many,
                "speedup": one / many,
            },
        },
    )


if __name__ == "__main__":
    main()
