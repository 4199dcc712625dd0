"""The checkpoint's remote code states the transformers range it supports (`SUPPORTED_TRANSFORMERS`) and fails with one
line outside it; a checkpoint saved by today's code loads, and computes what it computed, with the oldest transformers
release of that range, in a venv of its own."""

import fcntl
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from PIL import Image
from transformers import AutoConfig

from modeling_plum import configuration_plum
from modeling_plum.configuration_plum import (
    SUPPORTED_TRANSFORMERS,
    PlumConfig,
    UnsupportedTransformersError,
    check_transformers_version,
)
from modeling_plum.convert import build_tiny, save

ROOT = Path(__file__).resolve().parent.parent
OLDEST = next(spec.version for spec in SpecifierSet(SUPPORTED_TRANSFORMERS) if spec.operator == ">=")
OLD_VENVS = ROOT / ".venv-old-transformers"  # git-ignored; built once, reused by later runs


@pytest.mark.parametrize(
    "version", ["4.57.1", "5.0.0", "5.23.0", "5.24.0.dev0", "6.0.0", "6.0.0rc1", "not-a-version"]
)
def test_a_version_outside_the_range_is_one_line_naming_it_and_the_fix(monkeypatch, version):
    monkeypatch.setattr(configuration_plum.transformers, "__version__", version)  # what the check reads
    with pytest.raises(UnsupportedTransformersError) as raised:
        check_transformers_version()
    message = str(raised.value)
    assert "\n" not in message and f"this environment has {version}" in message
    assert f"pip install 'transformers{SUPPORTED_TRANSFORMERS}'" in message
    assert message.startswith(f"PLUM's remote code supports transformers {OLDEST}–5.x")
    assert isinstance(raised.value, ImportError)


@pytest.mark.parametrize("version", [OLDEST + ".0", transformers.__version__, "5.99.3", "5.30.0.dev0"])
def test_versions_inside_the_range_pass(monkeypatch, version):
    monkeypatch.setattr(configuration_plum.transformers, "__version__", version)
    check_transformers_version()


def test_the_installed_transformers_is_in_the_range():
    check_transformers_version()  # the pinned stack (pyproject.toml) must be inside what the remote code says


def test_importing_the_package_under_another_transformers_fails_with_one_line(tmp_path):
    code = "import transformers; transformers.__version__ = '4.57.1'; import modeling_plum"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "UnsupportedTransformersError: PLUM's remote code supports transformers "
        f"{OLDEST}–5.x; this environment has 4.57.1: pip install 'transformers{SUPPORTED_TRANSFORMERS}'"
    )


def test_a_saved_checkpoints_code_carries_the_check(tmp_path, monkeypatch):
    config = PlumConfig()
    config.register_for_auto_class()
    config.save_pretrained(tmp_path / "checkpoint")  # copies configuration_plum.py beside config.json
    assert "SUPPORTED_TRANSFORMERS" in (tmp_path / "checkpoint" / "configuration_plum.py").read_text()
    # the module a fresh `import transformers` gets (importing transformers' model classes replaces the first one)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "5.20.0")
    with pytest.raises(ImportError, match=r"this environment has 5\.20\.0: pip install"):
        AutoConfig.from_pretrained(tmp_path / "checkpoint", trust_remote_code=True)


# ------------------------------------------------------------------------------ the oldest release, in its own venv

LOAD_AND_RUN = """
import importlib.util, json, sys
import torch, transformers
from PIL import Image
from transformers import AutoModel, AutoProcessor

assert importlib.util.find_spec("modeling_plum") is None, "the repository's code must not be importable here"
folder = sys.argv[1]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
batch = processor(images=[Image.open(sys.argv[2])], conversations=[[("What visible parts does the car have?",
                  "The car in the image has the following visible parts: door and wheel.")]], parts=[[["door", "wheel"]]])
batch.pop("spans")
with torch.no_grad():
    out = model(**batch, gt_masks=[torch.zeros(2, 96, 128)])
print(json.dumps({"version": transformers.__version__, "file": transformers.__file__, "loss": out.loss.item(),
                  "logits": out.logits.sum().item(), "masks": [m.sum().item() for m in out.pred_masks]}))
"""


def old_transformers_python(version: str) -> Path:
    """The python of a venv whose transformers (and everything transformers depends on) is `version`, installed by pip
    from the configured registries; built once under `.venv-old-transformers/` and reused. torch, torchvision,
    segment-anything and pillow, which are not what is tested and cost GBs, are the running venv's, appended to the
    venv's path by a `.pth` file (after its own site-packages, so that its own transformers wins)."""
    folder = OLD_VENVS / version
    python = folder / "bin" / "python"
    OLD_VENVS.mkdir(exist_ok=True)
    with open(OLD_VENVS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, for parallel test runs
        ready = folder / "ready"
        if not ready.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
            site = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            (Path(site) / "zz-shared-torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
            done = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--ignore-installed",
                    f"transformers=={version}",
                ],
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, f"pip install transformers=={version} failed:\n{done.stderr[-3000:]}"
            ready.write_text(version)
    return python


@pytest.mark.slow
def test_a_checkpoint_saved_today_loads_with_the_oldest_supported_transformers(tmp_path):
    python = old_transformers_python(OLDEST)
    torch.manual_seed(0)
    model, processor = build_tiny()
    save(model.eval(), processor, tmp_path / "checkpoint")
    image = Image.new("RGB", (128, 96), (40, 160, 90))
    image.save(tmp_path / "image.png")
    batch = processor(
        images=[image],
        conversations=[
            [
                (
                    "What visible parts does the car have?",
                    "The car in the image has the following visible parts: door and wheel.",
                )
            ]
        ],
        parts=[[["door", "wheel"]]],
    )
    batch.pop("spans")
    with torch.no_grad():
        expected = model(**batch, gt_masks=[torch.zeros(2, 96, 128)])

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))  # the remote code is copied afresh
    work = tmp_path / "elsewhere"  # outside the repository: only the checkpoint's own code can be used
    work.mkdir()
    done = subprocess.run(
        [
            str(python),
            "-c",
            textwrap.dedent(LOAD_AND_RUN),
            str(tmp_path / "checkpoint"),
            str(tmp_path / "image.png"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Version(got["version"]) == Version(OLDEST)
    assert got["file"].startswith(str(OLD_VENVS / OLDEST))  # its own transformers, not the running venv's
    assert got["loss"] == pytest.approx(expected.loss.item(), rel=1e-5)
    assert got["logits"] == pytest.approx(expected.logits.sum().item(), rel=1e-4, abs=1e-3)
    assert got["masks"] == pytest.approx([m.sum().item() for m in expected.pred_masks], rel=1e-4, abs=1e-3)
