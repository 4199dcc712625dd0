"""`make ablate`: PLUM's mechanisms switched off one at a time, on the toy set, with 95 % intervals (on 2 CPU cores).

A thin command line over `plum_training.ablation` (its docstring says how each variant is run, measured and judged).
Stage 0 and the conversion are `make demo`'s (shared, cached by their settings). Outputs in `outputs/ablation/`:
`runs.jsonl` (one line per finished variant x seed: a killed run restarts where it stopped), `ablation.json` (the
table), `ablation.md` and `trade_off.png` (micro-gIoU against text retention, one point per λ_KL).

    python ablate.py            # 7 variants x 5 seeds, two fine-tunes at once (about 80 minutes on 2 cores)
    python ablate.py --quick    # a few minutes: every variant, 2 seeds, a handful of steps (the test suite)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

from partonomy_dataset import atomic
from plum_training import ablation
from plum_training.stage0 import Stage0Settings

QUICK = {"seeds": 2, "steps": 3, "warmup_steps": 1, "questions": 4, "naming_images": 4, "parallel": 1}


def main(argv=None) -> dict:
    defaults = ablation.AblationSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, a few steps: checks that everything runs"
    )
    for f in fields(ablation.AblationSettings):
        if f.name != "variants":
            default = getattr(defaults, f.name)
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", type=type(default), help=f"default {default}"
            )
    parser.add_argument("--toy-images", type=int, default=1200)
    parser.add_argument("--out", default="outputs")
    args = parser.parse_args(argv)
    names = {f.name for f in fields(ablation.AblationSettings)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    settings = ablation.AblationSettings(**{**(QUICK if args.quick else {}), **given})
    out = Path(args.out)
    started = time.monotonic()
    toy_images, stage0_settings = (
        (60, Stage0Settings.quick()) if args.quick else (args.toy_images, Stage0Settings())
    )
    base, data, seg_index, before = ablation.prepare(out, toy_images, stage0_settings)
    folder = out / "ablation"
    jobs = ablation.plan(settings, base, data, folder, seg_index)
    runs = ablation.run_plan(jobs, folder / "runs.jsonl", settings.parallel)
    table = ablation.summarise(runs)
    result = {"settings": asdict(settings), "before": before, "table": table, "runs": runs}
    result["trade_off"] = ablation.trade_off_points(table, before)
    result["seconds"] = round(time.monotonic() - started, 1)
    atomic.write_text(folder / "ablation.json", json.dumps(result, indent=1))
    report = ablation.markdown(table, before, asdict(settings))
    atomic.write_text(folder / "ablation.md", report + "\n")
    from plum_demo.drawing import trade_off_chart

    trade_off_chart(result["trade_off"]).save(folder / "trade_off.png")
    print(report)
    print(f"\n{result['seconds']:.0f} s; outputs in {folder}")
    return result


if __name__ == "__main__":
    main()
