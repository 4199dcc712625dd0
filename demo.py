"""`make demo`: the tiny PLUM made the way the real one is (stage-0 pretraining of a tiny CLIP, LLaVA and SAM,
conversion, the PLUM fine-tune) and measured the benchmark's way, on a CPU in about twelve minutes.

A thin command line over `plum_demo.pipeline` (its docstring lists the steps). Outputs in `outputs/`:
`demo_results.json` (every table row), `overlay_*.png`, `learning_curve.png`, the run's checkpoint under `run/`.
"""

from __future__ import annotations

import argparse

from plum_demo.pipeline import DemoSettings, run
from plum_demo.report import print_results


def main(argv=None) -> int:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=defaults.out, help="where everything is written")
    parser.add_argument("--toy-images", type=int, default=defaults.toy_images, help="images of the toy set")
    parser.add_argument(
        "--train-seconds", type=float, default=defaults.train_seconds, help="stage 1's time budget (seconds)"
    )
    parser.add_argument("--processes", type=int, default=defaults.processes, help="stage 1's gloo processes")
    parser.add_argument(
        "--eval-questions", type=int, default=defaults.eval_questions, help="held-out questions"
    )
    args = parser.parse_args(argv)
    settings = DemoSettings(
        out=args.out,
        toy_images=args.toy_images,
        train_seconds=args.train_seconds,
        processes=args.processes,
        eval_questions=args.eval_questions,
    )
    print_results(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
