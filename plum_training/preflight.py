"""Checks every command line runs before anything heavy: a path that does not exist is named as a missing folder (with
the command that makes it), never sent to the Hub as a repo id; a dataset must be a built folder or an explicit Hub
id; a device must exist; an output must not be overwritten silently. Each failure is one `UsageError` line, which
the scripts print and exit with 2."""

from __future__ import annotations

import re
import sys
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
BUILD_HINT = "python -m partonomy_dataset build --config {config} --out {folder}"
DEMO_MODEL_HINT = "`make demo` writes one (outputs/run/checkpoint-N/model); or give a Hub id as owner/name"


class UsageError(ValueError):
    """Something on the command line that cannot work; the message says what to do instead."""


def is_hub_id(name: str) -> bool:
    """`owner/name`, as the Hub spells repositories (a local path such as `./x`, `a/b/c` or `x/` is not one)."""
    return bool(HUB_ID.match(name))


def check_model(name: str, presets=("tiny",)) -> str:
    """A model folder that exists, a preset, or a Hub id; anything else is a missing folder."""
    if name in presets or Path(name).expanduser().is_dir():
        return name
    if Path(name).expanduser().exists():
        raise UsageError(f"model {name!r} is a file; give the folder that holds config.json")
    if is_hub_id(name):
        return name
    raise UsageError(f"no model folder {name!r} here (and it is not a Hub id owner/name): {DEMO_MODEL_HINT}")


def check_dataset(name: str, configs) -> str:
    """A folder built by `partonomy_dataset` that holds every config in `configs`, or a Hub id (owner/name)."""
    from partonomy_dataset.hub_folder import built_configs

    configs = [configs] if isinstance(configs, str) else list(configs)
    folder = Path(name).expanduser()
    if folder.is_dir():
        built = built_configs(folder)
        missing = [c for c in configs if c not in built]
        if missing:
            hint = BUILD_HINT.format(config=missing[0], folder=name)
            raise UsageError(
                f"dataset folder {name} has no built config {missing[0]!r} (it has {sorted(built) or 'none'}): {hint}"
            )
        return str(folder)
    if is_hub_id(name) and not folder.exists():
        return name
    hint = BUILD_HINT.format(config=configs[0] if configs else "toy", folder=name)
    raise UsageError(
        f"no dataset folder {name!r} here (and it is not a Hub id owner/name): build it with {hint}"
    )


def check_device(device: str | None) -> str | None:
    """`cuda` / `cuda:N` only where torch sees that GPU; `cpu` always."""
    if device is None or not device.startswith("cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device on this machine; use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_new_output(path: Path, overwrite: bool, flag: str = "--overwrite"):
    """An output file must not replace an earlier one without `flag`."""
    if Path(path).exists() and not overwrite:
        raise UsageError(
            f"{path} exists (an earlier run's); choose another --out, or pass {flag} to replace it"
        )


def run_command(main, argv=None) -> int:
    """Runs a script's `main(argv)`: a `UsageError` (or another error the user caused, in `ValueError` /
    `FileNotFoundError`) is one line on stderr and exit code 2."""
    try:
        result = main(argv)
    except (UsageError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0
