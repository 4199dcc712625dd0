"""benchmarks/gpu_smoke.py stays runnable: PLUM at the 7B widths, one block per stack, on the CPU in float32."""

import pytest

pytestmark = pytest.mark.slow


def test_gpu_smoke_script_runs_at_shallow_depth_on_the_cpu(tmp_path):
    import importlib.util
    import json
    import math
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    args = ["--layers", "1", "--device", "cpu", "--dtype", "float32", "--steps", "0", "--questions", "0"]
    results = smoke.main([*args, "--out", str(tmp_path / "smoke.json")])
    assert json.loads((tmp_path / "smoke.json").read_text()) == json.loads(json.dumps(results))
    assert results["device"] == "CPU" and results["layers"] == 1
    for run in results["train"].values():
        assert run["steps_per_s"] > 0 and run["peak_memory_gib"] > 0
        assert 0 < run["trainable_parameters"] < run["parameters"]
        assert math.isfinite(run["loss"])  # neither NaN nor infinite
    # the 7B widths are all there: LLaMA 4096 wide with a 32000-token vocabulary, CLIP-336, SAM ViT-H
    assert results["train"]["plain"]["parameters"] > 600_000_000
    assert results["eval"]["questions_per_s"] > 0
