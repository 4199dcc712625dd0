"""`make docs`: README.md and docs/*.md written from templates and the JSON outputs of the runs they quote, so that a
quoted number cannot drift from its run.

    python -m plum_demo.docs                          # writes README.md and docs/*.md from docs/templates/
    python -m plum_demo.docs --check                  # exit 1 if a written file differs (the tests)
    python -m plum_demo.docs --record demo outputs    # quote that run from now on (its JSON and pictures)

A template is markdown with placeholders:

- `{{ demo.trained.overall.micro_giou | .3f }}`: a value of a run's JSON (`docs/runs/<name>.json`), by dotted path
  (list items by index), with an optional format spec (`pct` = a share as a percentage with one decimal; `ci` = a
  question type's accuracy with its 95 % Wilson interval, from its `accuracy` and `num_questions`);
- `{{ tables demo }}`: the paper's Table 2 and Table 3 for a run's rows (`plum_demo.report.table_rows` for the demo,
  `results.json` rows for an evaluation);
- `{{ ablation_table }}`: the ablation's markdown table (`ablate.markdown`);
- `{{ speed_tables training_speed }}`: `benchmarks/bench_training_speed.py`'s variants (samples/s, ratios) and its step
  profile as markdown tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "docs" / "templates"
RUNS = ROOT / "docs" / "runs"
PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}")


def load_runs(folder: Path = RUNS) -> dict:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def lookup(runs: dict, dotted: str):
    value = runs
    for key in dotted.split("."):
        if isinstance(value, list):
            value = value[int(key)]
        elif key in value:
            value = value[key]
        else:
            raise KeyError(f"no {key!r} in {dotted!r} (have {sorted(value)[:12]})")
    return value


def formatted(value, spec: str | None) -> str:
    if spec is None:
        return str(value)
    if spec == "pct":
        return f"{100 * value:.1f}"
    if spec == "ci":
        return accuracy_with_interval(value["accuracy"], value["num_questions"])
    return format(value, spec)


CONFIDENCE = 0.95  # of the intervals quoted beside accuracies


def accuracy_with_interval(accuracy: float, questions: int) -> str:
    """`34.1 % (26.4-42.9)`: an accuracy over `questions` answers with its 95 % Wilson interval, in percent; the
    interval says how far another draw of as many questions could move it."""
    from scipy.stats import binomtest

    interval = binomtest(round(accuracy * questions), questions).proportion_ci(CONFIDENCE, method="wilson")
    return f"{100 * accuracy:.1f} % ({100 * interval.low:.1f}-{100 * interval.high:.1f})"


def tables(runs: dict, name: str) -> str:
    from plum_training.evaluation import markdown_tables

    from .report import table_rows

    run = runs[name]
    rows = table_rows(run) if name.startswith("demo") else run
    return markdown_tables(rows).rstrip("\n")


def ablation_table(runs: dict) -> str:
    from plum_training.ablation import markdown

    run = runs["ablation"]
    return markdown(run["table"], run["before"], run["settings"])


def speed_tables(runs: dict, name: str) -> str:
    run = runs[name]
    variants = run["variants"]
    lines = [
        "| variant | s / step | samples / s | × baseline | × the same without the change |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in variants.values():
        reference = variants.get(result["reference"])
        against = f"{result['vs_reference']:.2f} ({reference['label']})" if reference else "–"
        lines.append(
            f"| {result['label']} | {result['median_step_s']:.3f} | {result['samples_per_s']:.1f} | "
            f"{result['ratio']:.2f} | {against} |"
        )
    profile = run["profile"]
    lines += [
        "",
        f"Where a step goes ({profile['threads']} thread(s), batch {profile['batch_size']}, SAM embeddings cached, "
        f"mean of {profile['steps']} steps):",
        "",
        "| part of the step | ms |",
        "|---|---:|",
    ]
    lines += [f"| {part} | {ms:.1f} |" for part, ms in profile["ms_per_step"].items()]
    return "\n".join(lines)


def render(text: str, runs: dict) -> str:
    def replace(match):
        expression = match.group(1)
        if expression.startswith("tables "):
            return tables(runs, expression.split()[1])
        if expression == "ablation_table":
            return ablation_table(runs)
        if expression.startswith("speed_tables "):
            return speed_tables(runs, expression.split()[1])
        path, _, spec = (part.strip() for part in expression.partition("|"))
        return formatted(lookup(runs, path), spec or None)

    return PLACEHOLDER.sub(replace, text)


AT_THE_ROOT = ("README.md", "model_card.md")


def targets() -> dict[Path, Path]:
    """template → written file: `README.md` and `model_card.md` go to the repository root, the others to `docs/`."""
    return {
        template: (ROOT if template.name in AT_THE_ROOT else ROOT / "docs") / template.name
        for template in sorted(TEMPLATES.glob("*.md"))
    }


# run → (its JSON under the run's output folder, {picture there: the picture's name in docs/})
RECORDED = {
    "demo": (
        "demo_results.json",
        {"overlay_0_*.png": "demo_overlay.png", "learning_curve.png": "learning_curve.png"},
    ),
    "ablation": ("ablation/ablation.json", {"ablation/trade_off.png": "ablation_trade_off.png"}),
    "training_speed": ("bench/bench_training_speed.json", {}),
}


def record(name: str, out: Path):
    """Copies a run's JSON into `docs/runs/<name>.json` and its pictures into `docs/`: the run the docs now quote."""
    import shutil

    result, pictures = RECORDED[name]
    shutil.copyfile(out / result, RUNS / f"{name}.json")
    for pattern, target in pictures.items():
        found = sorted(out.glob(pattern))
        if not found:
            raise FileNotFoundError(f"{out}/{pattern}: the {name} run wrote no such picture")
        shutil.copyfile(found[0], ROOT / "docs" / target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument(
        "--record",
        nargs=2,
        metavar=("RUN", "OUT"),
        help=f"first make the docs quote a run ({', '.join(RECORDED)}) from its output folder",
    )
    args = parser.parse_args(argv)
    if args.record:
        record(args.record[0], Path(args.record[1]))
    runs, stale = load_runs(), []
    for template, target in targets().items():
        text = render(template.read_text(encoding="utf-8"), runs)
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run `make docs`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
