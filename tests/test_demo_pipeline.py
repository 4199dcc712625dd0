"""`make demo`'s learning curve: the in-training evaluations of stage 1, read from the run's log history, with the
minutes of training and the updates made (the docs quote how many updates a run made in its time budget)."""

import json

from plum_demo.pipeline import learning_curve


def test_the_learning_curve_has_minutes_updates_and_the_headline_numbers(tmp_path):
    records = [
        {"step": 24, "loss": 3.0},
        {"step": 25, "training_seconds": 60.6, "eval": {"micro_giou": 0.25, "whole2part_OA": 0.5}},
        {"step": 50, "loss": 2.0},
        {"step": 51, "training_seconds": 121.0, "eval": {"micro_giou": 0.4, "whole2part_OA": 0.6}},
    ]
    (tmp_path / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5')
    assert learning_curve(tmp_path) == [
        {"minutes": 1.01, "updates": 25, "micro_giou": 0.25, "whole2part_OA": 0.5},
        {"minutes": 2.02, "updates": 51, "micro_giou": 0.4, "whole2part_OA": 0.6},
    ]
