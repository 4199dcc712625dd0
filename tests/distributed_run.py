"""Run by `accelerate launch` from test_training.py: trains a few steps, then every rank writes a checksum of
its trainable parameters and what it saw, so the test can check that the ranks stayed in sync."""

import json
import os
import sys

from accelerate import PartialState

from plum_training import trainer
from plum_training.arguments import parse_args

if __name__ == "__main__":
    out_dir = sys.argv[sys.argv.index("--output_dir") + 1]
    captured = {}
    original = trainer.prepare_trainable

    def keep_model(model, args):
        captured["model"] = original(model, args)
        return captured["model"]

    trainer.prepare_trainable = keep_model
    skew = float(os.environ.get("PLUM_TEST_RANK1_CLOCK_AHEAD", "0"))
    if skew and os.environ.get("RANK") == "1":  # rank 1's clock reads `skew` seconds more than rank 0's
        local = trainer.TrainingClock.elapsed
        trainer.TrainingClock.elapsed = lambda clock: local(clock) + skew
    result = trainer.train(*parse_args(sys.argv[1:]))
    state = PartialState()
    model = captured["model"]
    checksum = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
    with open(f"{out_dir}/rank{state.process_index}.json", "w") as f:
        json.dump(
            {
                "checksum": checksum,
                "steps": [h["step"] for h in result["history"]],
                "lrs": [h["lr"] for h in result["history"]],
                "world": state.num_processes,
                "grad_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            },
            f,
        )
