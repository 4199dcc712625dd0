"""`make ablate` cannot rot: its `--quick` mode runs every variant end to end (stage 0, fine-tunes, measurements,
table) in the test suite."""

import json

import pytest

import ablate

pytestmark = pytest.mark.slow


def test_quick_ablation_runs_every_variant(tmp_path):
    result = ablate.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["table"] == json.loads(json.dumps(result["table"]))
    assert set(saved["table"]) == set(ablate.VARIANTS)
    for variant, row in saved["table"].items():
        for metric in ("micro_giou", "macro_giou", "choice_accuracy", "text_accuracy"):
            assert 0.0 <= row[metric]["mean"] <= 1.0, (variant, metric)
        assert row["text_nll"]["mean"] > 0 and row["seeds"] == 1
        assert row["agrees"] in ("yes", "no", "—") and row["paper"]
    assert {run["steps"] for run in saved["runs"]} == {3}  # the same step budget for every variant
    stage = saved["stage0"]
    assert set(stage["categories"]) == {"animal", "building", "furniture", "plant", "vehicle"}
    assert 0.0 <= stage["stage0"]["text_accuracy"] <= 1.0
