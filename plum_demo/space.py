"""Assemble a Hugging Face Space folder for `app.py`: the app, the packages it imports, a README whose YAML header
says `sdk: gradio` and `app_file: app.py`, and a `requirements.txt` read from this project's `pyproject.toml`.

    python -m plum_demo.space OUT_DIR [--model HUB_ID]    # then: huggingface-cli upload --repo-type space ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("modeling_plum", "partonomy_dataset", "metrics", "plum_training", "plum_demo")
APP_EXTRA = "app"  # the optional dependencies the app needs beyond the project's own


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies and its `app` extra, as pinned in `pyproject.toml`."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get(APP_EXTRA, []))


def readme(model: str | None) -> str:
    gradio = next(r for r in requirements() if r.startswith("gradio=="))
    sdk_version = gradio.split("==", 1)[1].replace(".*", ".0")
    variables = f"\n  PLUM_MODEL: {model}\n  PLUM_TRUST_REMOTE_CODE: '1'" if model else ""
    return f"""---
title: PLUM part-level segmentation
emoji: 🧩
colorFrom: blue
colorTo: green
sdk: gradio
sdk_version: {sdk_version}
app_file: app.py
pinned: false
license: apache-2.0
tags:
- part-segmentation
- partonomy
variables:{variables or " {}"}
---

# PLUM: part-level segmentation

Ask about an object's parts and see every part the answer names segmented; highlight any words of an answer to
segment them; browse PARTONOMY questions with the ground truth beside PLUM's masks. `PLUM_MODEL` names the checkpoint
(a Hub id); `PLUM_TRUST_REMOTE_CODE=1` lets the app run the model code the checkpoint carries.
"""


def assemble(out, model: str | None = None) -> Path:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(ROOT / "app.py", out / "app.py")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, out / package, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "requirements.txt").write_text("\n".join(requirements()) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(model), encoding="utf-8")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plum_demo.space", description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--model", help="the checkpoint the Space loads (a Hub id)")
    args = parser.parse_args(argv)
    print(f"wrote {assemble(args.out, args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
