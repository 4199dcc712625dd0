"""Table 3 on the toy set for two transformers architectures and PLUM, with each model's questions/s.

The two transformers models are tiny and randomly initialised (LLaVA-1.5 and Qwen2-VL, their real processors and chat
templates, `plum_training/testing/tiny_vlms.py`): their rows show that any image-text-to-text model runs through the
benchmark, not what such a model can do. PLUM is the checkpoint `make demo` trains.

    python benchmarks/eval_architectures.py [--plum outputs/run/checkpoint-N/model] [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import eval_partonomy  # noqa: E402
from benchmarks._common import add_out_argument, write_results  # noqa: E402
from partonomy_dataset import __main__ as dataset_cli  # noqa: E402
from plum_training.evaluation import markdown_tables  # noqa: E402
from plum_training.testing.tiny_vlms import write_tiny_llava, write_tiny_qwen2_vl  # noqa: E402

OUT = ROOT / "outputs"


def latest_demo_checkpoint() -> Path | None:
    runs = sorted((OUT / "run").glob("checkpoint-*/model"), key=lambda p: int(p.parent.name.split("-")[-1]))
    return runs[-1] if runs else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plum", help="a PLUM checkpoint (default: the last one `make demo` wrote)")
    parser.add_argument("--limit", type=int, default=200)
    add_out_argument(parser, __file__)
    args = parser.parse_args()
    data = OUT / "partonomy"
    if not (data / "data" / "toy").exists():
        dataset_cli.main(["build", "--config", "toy", "--out", str(data)])
    models = {}
    for name, writer in (
        ("llava-1.5-tiny-random", write_tiny_llava),
        ("qwen2-vl-tiny-random", write_tiny_qwen2_vl),
    ):
        folder = OUT / "tiny_vlms" / name
        if not (folder / "config.json").exists():
            writer(folder)
        models[name] = [str(folder)]
    plum = Path(args.plum) if args.plum else latest_demo_checkpoint()
    if plum is not None:
        models["plum-tiny (make demo)"] = [str(plum), "--trust_remote_code"]
    rows, speeds = {}, {}
    for name, model in models.items():
        out = OUT / "eval_architectures" / name
        common = [
            "--dataset",
            str(data),
            "--config",
            "toy",
            "--split",
            "validation",
            "--limit",
            str(args.limit),
        ]
        results = eval_partonomy.main(
            [*common, "--model", *model, "--out", str(out), "--name", name, "--device", "cpu", "--overwrite"]
        )
        rows.update({row: result for row, result in results.items() if row in (name, f"{name}, blind")})
        rows.setdefault("random", results["random"])
        # 0 when every question was resumed from an earlier dump: nothing was timed
        speeds[name] = json.loads((out / "throughput.json").read_text())["questions_per_s"] or None
    tables = markdown_tables(rows)
    print(tables[tables.index("**Table 3") :])
    for name, speed in speeds.items():
        print(f"{name}: {speed:.2f} questions/s" if speed else f"{name}: resumed from its dump")
    write_results(
        args.out,
        {"limit": args.limit, "dataset": str(data), "plum": str(plum) if plum is not None else None},
        {"rows": rows, "questions_per_s": speeds},
    )


if __name__ == "__main__":
    main()
