"""Files written whole or not at all: the data goes to a temporary file beside the target (a unique name, so that
concurrent writers never share one), which is then renamed over it. A reader sees the old file or the new one, never
half of one, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_lines(path, lines) -> Path:
    """JSON-lines style text: every line (a str, without its newline) followed by a newline."""
    return write_text(path, "".join(line + "\n" for line in lines))
