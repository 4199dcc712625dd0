"""`python -m plum_demo.space`: a Hugging Face Space folder whose README header runs app.py with Gradio and whose
requirements come from pyproject.toml."""

import tomllib
from pathlib import Path

import yaml

from plum_demo import space

ROOT = Path(__file__).resolve().parent.parent


def test_space_folder_runs_app_py_with_the_projects_requirements(tmp_path):
    assert space.main([str(tmp_path / "space"), "--model", "me/plum-13b"]) == 0
    folder = tmp_path / "space"
    header = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert header["variables"] == {"PLUM_MODEL": "me/plum-13b", "PLUM_TRUST_REMOTE_CODE": "1"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = (folder / "requirements.txt").read_text().split("\n")[:-1]
    assert required == project["dependencies"] + project["optional-dependencies"]["app"]
    assert header["sdk_version"] == next(r for r in required if r.startswith("gradio==")).split("==")[
        1
    ].replace(".*", ".0")
    for path in (
        "app.py",
        "modeling_plum/modeling_plum.py",
        "plum_demo/drawing.py",
        "plum_demo/app_handlers.py",
        "modeling_plum/pipeline_plum.py",
        "plum_training/scoring.py",
    ):
        assert (folder / path).is_file(), path
