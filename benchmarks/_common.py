"""What the benchmark scripts share: where their JSON results go (`outputs/bench/<script>.json`, written atomically,
with the settings they ran with and the machine they ran on, for `make docs`), and the inputs the training
benchmarks build once and reuse (a toy PARTONOMY folder, a converted stage-0-like PLUM).

Every script takes `--out PATH` (default `outputs/bench/<script name>.json`); the numbers it prints are the ones in
that file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the scripts run as `python benchmarks/<x>.py`
    sys.path.insert(0, str(ROOT))
BENCH_DIR = ROOT / "outputs" / "bench"
WORK_DIR = BENCH_DIR / "inputs"  # toy folders and converted models the benchmarks build once


def default_out(script: str) -> Path:
    """`outputs/bench/<script name without .py>.json` for a script's `__file__`."""
    return BENCH_DIR / f"{Path(script).stem}.json"


def add_out_argument(parser, script: str):
    parser.add_argument(
        "--out",
        default=str(default_out(script)),
        help="write the printed numbers, the settings and the machine here as JSON (default: %(default)s)",
    )


def machine() -> dict:
    """The machine a run measured: CPU count, torch threads, processor, and how busy it was (1-minute load average:
    on a shared machine a ratio measured side by side means more than an absolute number)."""
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    model = _cpu_model()
    if model:
        info["cpu_model"] = model
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None
            )
    except OSError:
        return None


def write_results(path, settings: dict, results: dict) -> dict:
    """`{"settings": …, "machine": …, **results}` to `path` as JSON, atomically (a temporary file in the same folder,
    then a rename): a reader never sees half a file. Returns what was written."""
    from partonomy_dataset import atomic

    payload = {"settings": settings, "machine": machine(), **results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(payload, indent=1, default=str) + "\n")
    return payload


def interleaved(functions: dict, repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Times each of `functions` (name → callable) `repeats` times, taking turns (A B C A B C …, after `warmup` untimed
    calls of each), so that a machine that gets busier or quieter during the run affects all of them alike. Returns
    ({name: median seconds}, {name: the last call's result})."""
    import statistics
    import time

    results = {}
    for _ in range(warmup):
        for name, function in functions.items():
            results[name] = function()
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            results[name] = function()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in seconds.items()}, results


# ---------------------------------------------------------------------------------------------- training inputs


def toy_dataset(num_images: int = 200, folder: Path | None = None) -> Path:
    """A toy PARTONOMY folder of `num_images` images (built once, about 20 s for 200)."""
    from partonomy_dataset import __main__ as dataset_cli
    from partonomy_dataset.hub_folder import built_configs

    folder = folder or WORK_DIR / f"toy-{num_images}"
    if "toy" not in built_configs(folder):
        command = ["build", "--config", "toy", "--out", str(folder), "--toy-num-images", str(num_images)]
        if dataset_cli.main(command) != 0:
            raise RuntimeError(f"building the toy set into {folder} failed")
    return folder


def converted_stage0(folder: Path | None = None) -> Path:
    """A converted stage-0-like PLUM (the demo's geometry, SAM's encoder frozen; weights from a few steps of
    `Stage0Settings.quick()`: right for speed, not for quality), made as `make demo` makes its model: a tiny LLaVA-HF
    folder and a segment_anything `.pth`, then `python -m modeling_plum.convert --llava … --sam …`."""
    from modeling_plum.convert import main as convert
    from plum_demo.pipeline import TINY_HEADS
    from plum_training import stage0

    folder = folder or WORK_DIR / "stage0-quick"
    model = folder / "plum"
    if (model / "config.json").exists():
        return model
    folder.mkdir(parents=True, exist_ok=True)
    settings = stage0.Stage0Settings.quick()
    threads = _torch_threads()
    try:
        stage0._language_job(str(folder / "llava"), settings)
        stage0._sam_job(str(folder / "sam_tiny.pth"), settings)
    finally:
        _torch_threads(threads)  # the stage-0 jobs pin one thread
    arguments = [
        "--llava",
        str(folder / "llava"),
        "--sam",
        str(folder / "sam_tiny.pth"),
        "--dtype",
        "float32",
    ]
    arguments += ["--config-overrides", json.dumps(TINY_HEADS), "--out", str(model)]
    if convert(arguments) != 0:
        raise RuntimeError(f"converting stage 0 into {model} failed")
    return model


def _torch_threads(value: int | None = None) -> int:
    import torch

    if value is not None:
        torch.set_num_threads(value)
    return torch.get_num_threads()
