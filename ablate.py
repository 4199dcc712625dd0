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

from plum_training import ablation
from plum_training.stage0 import Stage0Settings

QUICK = {"seeds": 2, "steps": 3, "warmup_steps": 1, "questions": 4, "naming_images": 4, "parallel": 1}


def prepare(out: Path, toy_images: int, stage0_settings: Stage0Settings) -> tuple[str, str, int, dict]:
    """The toy set, the converted stage-0 model (shared by every variant), the [SEG] token's id and the base model's
    text abilities (what retention is measured against)."""
    from transformers import AutoTokenizer

    from modeling_plum.convert import SEG_TOKEN
    from plum_demo.pipeline import DemoSettings, build_toy, convert
    from plum_training import stage0

    data = build_toy(DemoSettings(out=str(out), toy_images=toy_images))
    pretrained = stage0.run_stage0(out / "stage0", stage0_settings)
    base = out / "ablation" / "base"
    if not (base / "config.json").exists():
        convert(pretrained, base)
    seg_token_index = AutoTokenizer.from_pretrained(base).convert_tokens_to_ids(SEG_TOKEN)
    return str(base), str(data), seg_token_index, base_text(base, data)


def base_text(base: Path, data: Path) -> dict:
    import datasets

    from partonomy_dataset.sources import toy
    from plum_training import evaluation
    from plum_training.loading import load_model_and_processor

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


def main(argv=None) -> dict:
    defaults = ablation.AblationSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, a few steps: checks that everything runs"
    )
    for f in fields(ablation.AblationSettings):
        if f.name != "variants":
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)))
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
    base, data, seg_index, before = prepare(out, toy_images, stage0_settings)
    folder = out / "ablation"
    jobs = ablation.plan(settings, base, data, folder, seg_index)
    runs = ablation.run_plan(jobs, folder / "runs.jsonl", settings.parallel)
    table = ablation.summarise(runs)
    result = {"settings": asdict(settings), "before": before, "table": table, "runs": runs}
    result["trade_off"] = ablation.trade_off_points(table, before)
    result["seconds"] = round(time.monotonic() - started, 1)
    (folder / "ablation.json").write_text(json.dumps(result, indent=1))
    report = markdown(table, before, asdict(settings))
    (folder / "ablation.md").write_text(report + "\n")
    from plum_demo.drawing import trade_off_chart

    trade_off_chart(result["trade_off"]).save(folder / "trade_off.png")
    print(report)
    print(f"\n{result['seconds']:.0f} s; outputs in {folder}")
    return result


if __name__ == "__main__":
    main()
