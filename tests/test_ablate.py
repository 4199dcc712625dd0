"""`make ablate`: the agreement rule on known per-seed numbers (all three verdicts, including means that differ by an
interval that covers 0), and (slow) `--quick` end to end: every variant, the table, the trade-off points, and a killed
run restarting where it stopped."""

import json

import pytest

import ablate
from plum_training import ablation


def runs_of(variant, values, metric="micro_giou"):
    return [{"variant": variant, "seed": seed, metric: value} for seed, value in enumerate(values)]


@pytest.mark.parametrize(
    ("full", "variant", "direction", "expected"),
    [
        ([0.50, 0.52, 0.49, 0.51, 0.50], [0.45, 0.46, 0.44, 0.47, 0.45], -1, "agrees"),  # clearly lower
        (
            [0.50, 0.52, 0.49, 0.51, 0.50],
            [0.45, 0.46, 0.44, 0.47, 0.45],
            +1,
            "disagrees",
        ),  # paper said higher
        # the means differ by 0.02, but the paired differences (+0.10, -0.06, +0.07, -0.05, +0.04) cover 0
        ([0.50, 0.52, 0.49, 0.51, 0.50], [0.60, 0.46, 0.56, 0.46, 0.54], +1, "unresolved"),
        ([0.50], [0.40], -1, "unresolved"),  # one seed: no interval
    ],
)
def test_the_agreement_rule(full, variant, direction, expected):
    runs = runs_of("full PLUM", full) + runs_of("no feedback loop", variant)
    differences = ablation.paired_differences(runs, "no feedback loop", "micro_giou")
    assert differences == pytest.approx([v - f for v, f in zip(variant, full)])
    difference = ablation.interval(differences)
    assert abs(difference["mean"]) >= 0.02  # in every case the means differ
    assert ablation.verdict(difference, direction) == expected


def test_intervals_are_t_intervals():
    result = ablation.interval([1.0, 2.0, 3.0])
    assert result["mean"] == 2.0 and result["n"] == 3
    assert result["high"] - 2.0 == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-3)  # t(0.975, 2) = 4.303


@pytest.mark.slow
def test_quick_ablation_runs_every_variant_and_resumes(tmp_path):
    result = ablate.main(["--quick", "--out", str(tmp_path)])
    folder = tmp_path / "ablation"
    saved = json.loads((folder / "ablation.json").read_text())
    assert set(saved["table"]) == set(ablation.VARIANTS)
    for variant, row in saved["table"].items():
        assert row["seeds"] == 2 and row["paper"]
        for metric in ("micro_giou", "macro_giou", "naming_accuracy"):
            assert 0.0 <= row["metrics"][metric]["mean"] <= 1.0, (variant, metric)
        assert set(row["verdicts"]) == set(ablation.VARIANTS[variant][1])
        assert all(v in ("agrees", "disagrees", "unresolved") for v in row["verdicts"].values())
    assert {run["steps"] for run in saved["runs"]} == {3}  # the same budget for every variant
    assert [p["kl_loss_weight"] for p in saved["trade_off"]] == [0.0, 0.1, 1.0, 10.0]
    assert (folder / "trade_off.png").exists() and (folder / "ablation.md").read_text().startswith("2 seeds")
    # killed after five runs, the sixth line torn: the restart keeps the five and runs the other nine
    lines = (folder / "runs.jsonl").read_text().splitlines()
    (folder / "runs.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    again = ablate.main(["--quick", "--out", str(tmp_path)])
    assert len(again["runs"]) == len(result["runs"]) == 2 * len(ablation.VARIANTS)
    assert again["runs"][:5] == [json.loads(line) for line in lines[:5]]
