"""Conversion memory and size: an fp16 LLaVA-1.5 folder of the real geometry (1 LLaMA layer, 2 CLIP layers, every width
real) plus an official SAM ViT-B `.pth` → `python -m modeling_plum.convert` in its own process, whose peak RSS is
read from `/proc/self/status` (`VmHWM`). Prints bytes per parameter and the peak against the budget (inputs + output + 1.5 GiB), and
projects both to plum-7b / plum-13b (SAM ViT-H) from their parameter counts on the meta device.

    python benchmarks/bench_conversion.py [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import add_out_argument, write_results  # noqa: E402
from modeling_plum import PlumConfig, PlumForConditionalGeneration  # noqa: E402
from plum_training.testing.real_geometry import write_llava_15, write_sam  # noqa: E402

GIB = 1024**3
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def folder_bytes(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def parameters(preset: str) -> tuple[int, int, int]:
    """(LLaVA, SAM, PLUM heads) parameter counts of a preset, on the meta device."""
    with torch.device("meta"):
        model = PlumForConditionalGeneration(PlumConfig.from_preset(preset))

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    sam = count(model.sam_image_encoder, model.sam_prompt_encoder, model.sam_mask_decoder)
    return count(model.llava), sam, count(model) - count(model.llava) - sam


def parameter_count(folder: Path) -> int:
    from safetensors import safe_open

    count = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                count += int(torch.tensor(shape).prod()) if shape else 1
    return count


def project(imports: int, dtype: str) -> dict:
    """The real presets' output size and peak RSS, projected from the measured import cost (printed as well)."""
    projections = {}
    for preset in ("plum-7b", "plum-13b"):
        llava, sam, heads = parameters(preset)
        out = (llava + sam + heads) * BYTES[dtype]
        inputs = llava * 2 + sam * 4  # fp16 LLaVA as llava-hf ships it, fp32 SAM ViT-H
        projected = imports + out + sam * 4  # the output in memory, plus the SAM state dict read in float32
        print(
            f"  {preset}: {llava + sam + heads:,} parameters → output {out / GIB:.1f} GiB; projected peak RSS "
            f"≈ {projected / GIB:.1f} GiB (inputs {inputs / GIB:.1f} GiB + output + 1.5 GiB = "
            f"{(inputs + out + 1.5 * GIB) / GIB:.1f} GiB)"
        )
        projections[preset] = {
            "parameters": llava + sam + heads,
            "output_gib": out / GIB,
            "inputs_gib": inputs / GIB,
            "peak_rss_gib": projected / GIB,
            "budget_gib": (inputs + out + 1.5 * GIB) / GIB,
        }
    return projections


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(BYTES))
    add_out_argument(parser, __file__)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_llava_15(root / "llava")
        write_sam(root / "sam.pth")
        script = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {str(ROOT)!r})
            from modeling_plum.convert import main
            from plum_training.testing.real_geometry import peak_rss_bytes
            main(["--llava", {str(root / "llava")!r}, "--sam", {str(root / "sam.pth")!r},
                  "--out", {str(root / "plum")!r}, "--dtype", {args.dtype!r}])
            print(json.dumps({{"peak": peak_rss_bytes()}}))
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        peak = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
        baseline = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
                "import torch, transformers, segment_anything, safetensors, modeling_plum; "
                "from plum_training.testing.real_geometry import peak_rss_bytes; print(json.dumps(peak_rss_bytes()))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        imports = json.loads(baseline.stdout.strip().splitlines()[-1])
        llava_in, sam_in = folder_bytes(root / "llava"), folder_bytes(root / "sam.pth")
        output = folder_bytes(root / "plum")
        count = parameter_count(root / "plum")
    budget = llava_in + sam_in + output + 1.5 * GIB
    print(
        f"shallow real geometry (LLaMA 4096 x 1 layer, CLIP-336 x 2 layers, SAM ViT-B), --dtype {args.dtype}:"
    )
    print(
        f"  parameters {count:,}; inputs {llava_in / GIB:.2f} GiB (fp16 LLaVA) + {sam_in / GIB:.2f} GiB (SAM fp32)"
    )
    print(f"  output {output / GIB:.2f} GiB = {output / count:.3f} bytes/parameter")
    print(
        f"  peak RSS {peak / GIB:.2f} GiB (of which {imports / GIB:.2f} GiB importing torch + transformers); "
        f"budget inputs + output + 1.5 GiB = {budget / GIB:.2f} GiB"
    )
    extra = peak - imports - output  # what the conversion holds beyond the output (the SAM file, transients)
    print(f"  beyond imports + output: {extra / GIB:.2f} GiB")
    projections = project(imports, args.dtype)
    write_results(
        args.out,
        {"dtype": args.dtype, "geometry": "LLaMA 4096 x 1 layer, CLIP-336 x 2 layers, SAM ViT-B"},
        {
            "parameters": count,
            "llava_input_gib": llava_in / GIB,
            "sam_input_gib": sam_in / GIB,
            "output_gib": output / GIB,
            "bytes_per_parameter": output / count,
            "peak_rss_gib": peak / GIB,
            "imports_rss_gib": imports / GIB,
            "budget_gib": budget / GIB,
            "beyond_imports_and_output_gib": extra / GIB,
            "projected": projections,
        },
    )


if __name__ == "__main__":
    main()
