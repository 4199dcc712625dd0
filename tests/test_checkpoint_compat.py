"""A checkpoint saved by the code before the model file was split (segmentation_plum.py, losses_plum.py) loads into
today's classes and gives equal outputs: no parameter was renamed. The old code is taken from git history."""

import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_plum import PlumForConditionalGeneration

from .conftest import ROOT

BEFORE_THE_SPLIT = "d0bf5c5"  # the last commit whose modeling_plum/ held everything in modeling_plum.py
OLD_FILES = ("__init__.py", "configuration_plum.py", "modeling_plum.py", "processing_plum.py", "convert.py")

SAVE_WITH_OLD_CODE = """
import sys, torch
from PIL import Image
import numpy as np
from modeling_plum.convert import build_tiny
torch.manual_seed(0)
model, processor = build_tiny()
model.eval()
model.save_pretrained(sys.argv[1]); processor.save_pretrained(sys.argv[1])
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
answer = "The car in the image has the following visible parts: door and wheel."
batch = processor(images=[image], conversations=[[("What visible parts does the car have?", answer)]],
                  parts=[[["door", "wheel"]]])
batch.pop("spans")
batch = dict(batch)
gt = [torch.zeros(2, 96, 128)]
with torch.no_grad():
    out = model(**batch, gt_masks=gt)
torch.save({"batch": batch, "gt": gt, "loss": out.loss, "logits": out.logits, "masks": out.pred_masks}, sys.argv[2])
"""


def old_code(tmp_path):
    folder = tmp_path / "old" / "modeling_plum"
    folder.mkdir(parents=True)
    for name in OLD_FILES:
        done = subprocess.run(
            ["git", "show", f"{BEFORE_THE_SPLIT}:modeling_plum/{name}"], cwd=ROOT, capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"the commit {BEFORE_THE_SPLIT} is not in this clone's history (a shallow clone?)")
        (folder / name).write_bytes(done.stdout)
    return folder.parent


@pytest.mark.slow
def test_a_checkpoint_saved_before_the_split_loads_with_equal_outputs(tmp_path):
    code = old_code(tmp_path)
    checkpoint, expected = tmp_path / "checkpoint", tmp_path / "expected.pt"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SAVE_WITH_OLD_CODE), str(checkpoint), str(expected)],
        cwd=code,
        env={"PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(expected, weights_only=False)
    model = PlumForConditionalGeneration.from_pretrained(
        checkpoint
    ).eval()  # today's class, not the folder's code
    with torch.no_grad():
        out = model(**saved["batch"], gt_masks=saved["gt"])
    assert torch.allclose(out.loss, saved["loss"], atol=1e-5)
    assert torch.allclose(out.logits, saved["logits"], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(out.pred_masks, saved["masks"]))
