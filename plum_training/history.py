"""`output_dir/log_history.jsonl`: one JSON line per optimizer update (step, learning rate, loss and each loss
component), written by the main process. A resumed run first drops the lines past its checkpoint, then appends."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from partonomy_dataset import atomic

logger = logging.getLogger(__name__)
LOG_HISTORY = "log_history.jsonl"


def read_history(path) -> list[dict]:
    """The records of a log history; a torn last line (a run killed mid-write) is left out."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: line %d is not complete JSON; left out", path, number)
    return records


class LogHistory:
    """Appends one line per update; `resume_at(step)` keeps only the records up to `step` (written atomically)."""

    def __init__(self, output_dir, enabled: bool = True):
        self.path = Path(output_dir) / LOG_HISTORY
        self.enabled = enabled

    def resume_at(self, step: int):
        if not self.enabled:
            return
        kept = [r for r in read_history(self.path) if r.get("step", 0) <= step]
        atomic.write_lines(self.path, (json.dumps(r) for r in kept))

    def start_fresh(self):
        if self.enabled and self.path.exists():
            self.path.unlink()

    def append(self, record: dict):
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
