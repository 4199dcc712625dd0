"""Train PLUM on PARTONOMY with accelerate: LoRA on the language model, resumable checkpoints, Hub pushes.

    accelerate launch train_accelerate.py --model_name_or_path tiny --dataset outputs/partonomy --configs toy \\
        --output_dir runs/toy --max_steps 500
    accelerate launch train_accelerate.py --model_name_or_path plum-13b/ --trust_remote_code ...
    accelerate launch train_accelerate.py config.yaml          # the same arguments in a YAML file

A thin command line over `plum_training.trainer.PlumTrainer`; the arguments and their defaults (the paper's Table 6)
are in `plum_training.arguments` (`--help` lists them).
"""

from __future__ import annotations

import os
import sys

from plum_training.arguments import parse_args
from plum_training.checkpoints import CheckpointError
from plum_training.preflight import UsageError, check_dataset, check_model


def main(argv=None) -> int:
    model_args, data_args, args = parse_args(argv)
    check_model(model_args.model_name_or_path)
    data_args.dataset = check_dataset(data_args.dataset, data_args.configs)
    from plum_training.trainer import PlumTrainer

    PlumTrainer(model_args, data_args, args).train()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, UsageError) as error:
        if os.environ.get("RANK", "0") == "0":  # one message, not one per process
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
