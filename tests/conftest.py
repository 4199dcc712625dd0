"""Test-wide settings: offline hub, a private HF cache, and paths to the shared real data."""

import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub / evaluate: no network, and a cache the tests own.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="plum-tests-hf-"))

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL_PASCAL_PART = ROOT.parent / "shared" / "real-data" / "pascal-part"


@pytest.fixture(scope="session")
def real_pascal_part_dir():
    if not REAL_PASCAL_PART.is_dir():
        pytest.skip(
            f"the real Pascal-Part files are not here: {REAL_PASCAL_PART} (CI puts ../shared beside the clone)"
        )
    return REAL_PASCAL_PART
