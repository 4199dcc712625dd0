"""What `make demo` prints and draws from `demo_results.json`: the paper's Table 2 / Table 3 columns for every row
(trained, blind, untrained, whole-object, random), object naming, timings, and the learning curve."""

from __future__ import annotations

from pathlib import Path

from plum_training.evaluation import markdown_tables

from .drawing import line_chart

ROWS = {  # demo_results.json key → the row's name in the tables
    "trained": "tiny PLUM (trained)",
    "blind": "tiny PLUM, image withheld (blind)",
    "untrained": "tiny PLUM before stage 1",
    "part-prior": "part frequencies, no image",
    "whole-object": "whole object for every part",
    "random": "random choice",
}


def table_rows(results: dict) -> dict:
    return {name: results[key] for key, name in ROWS.items() if key in results}


def overall_lines(results: dict) -> list[str]:
    lines = [f"{'row':<36} {'micro-gIoU':>10} {'macro-gIoU':>10} {'naming':>8}"]
    for key, name in ROWS.items():
        result = results.get(key)
        if result is None:
            continue
        overall = result.get("overall") or {}
        micro = f"{overall['micro_giou']:.3f}" if overall else "–"
        macro = f"{overall['macro_giou']:.3f}" if overall else "–"
        naming = result.get("naming", {}).get("naming_accuracy")
        lines.append(f"{name:<36} {micro:>10} {macro:>10} {'–' if naming is None else f'{naming:.3f}':>8}")
    return lines


def learning_curve_png(results: dict, path: Path):
    curve = results.get("learning_curve") or []
    if not curve:
        return
    series = {"micro-gIoU": [(0.0, results["untrained"]["overall"]["micro_giou"])]}
    series["micro-gIoU"] += [(point["minutes"], point["micro_giou"]) for point in curve]
    series["identification A"] = [(point["minutes"], point.get("identification_A", 0.0)) for point in curve]
    series["whole2part OA"] = [(point["minutes"], point.get("whole2part_OA", 0.0)) for point in curve]
    title = f"held-out toy questions ({results['settings']['curve_questions']}) while stage 1 trains"
    line_chart(series, title, "training minutes", "score").save(path)


def print_results(results: dict):
    print()
    print(markdown_tables(table_rows(results)))
    print("\n".join(overall_lines(results)))
    seconds = results["seconds"]
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"checkpoint: {results['checkpoint']}")
