"""The README's quick start, walked as a new user walks it: every block marked `walkthrough` runs, in the README's order,
in an empty folder, offline (HF_HUB_OFFLINE, an unreachable proxy, an empty Hugging Face cache), and succeeds. The
README and docs are what `make docs` writes from their templates and the runs they quote."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(bash|python) walkthrough\n(.*?)^```", re.S | re.M)
LINKED = ("train_accelerate.py", "eval_partonomy.py", "app.py", "metrics")  # what a clone's root holds


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    return BLOCK.findall(text)


def test_the_readme_has_a_walkthrough_in_the_users_order():
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    text = "\n".join(code for _, code in blocks)
    order = ["partonomy_dataset build", "modeling_plum.convert", "load_dataset", "train_accelerate.py"]
    order += ["eval_partonomy.py", 'pipeline("part-segmentation"']
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)


def test_the_docs_are_what_their_templates_and_runs_give():
    from plum_demo import docs

    assert docs.main(["--check"]) == 0, (
        "README.md or docs/ differ from docs/templates + docs/runs: run `make docs`"
    )
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.slow
def test_walk_the_readme_in_an_empty_folder(tmp_path):
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),  # a fresh cache: nothing stale can stand in for a missing step
        "HTTP_PROXY": "http://127.0.0.1:9",  # anything that tries the network fails at once
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for number, (language, code) in enumerate(walkthrough_blocks((ROOT / "README.md").read_text()), 1):
        command = (
            ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        )
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (
            f"block {number} ({language}) failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    assert (tmp_path / "eval_toy" / "tables.md").exists()
