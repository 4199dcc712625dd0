"""Runs a page's `walkthrough` blocks as a new user runs them: in order, in one folder, offline (HF_HUB_OFFLINE, an
unreachable proxy, an empty Hugging Face cache), with what a clone's root holds linked in. Used by tests/test_readme.py
(the README) and tests/test_finetune_your_parts.py (docs/finetune-your-parts.md)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(bash|python) walkthrough\n(.*?)^```", re.S | re.M)
LINKED = ("train_accelerate.py", "eval_partonomy.py", "app.py", "metrics")  # what a clone's root holds


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every block whose info string is `bash walkthrough` or `python walkthrough`, in order."""
    return BLOCK.findall(text)


def walk(page: Path, folder: Path, timeout: float = 900):
    """Runs `page`'s walkthrough blocks in order in `folder`; a failing block fails the test, naming it with its
    output."""
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(folder / "hf-home"),  # a fresh cache: nothing stale can stand in for a missing step
        "HTTP_PROXY": "http://127.0.0.1:9",  # anything that tries the network fails at once
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    blocks = walkthrough_blocks(Path(page).read_text())
    assert blocks, f"{page} has no walkthrough blocks"
    for number, (language, code) in enumerate(blocks, 1):
        command = (
            ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        )
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (
            f"{Path(page).name} block {number} ({language}) failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
