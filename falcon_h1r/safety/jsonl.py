"""Append-only, resumable JSONL logs for long judging and generation runs (a crash loses at most one batch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ResumableJsonl:
    """An append-only JSONL log keyed by ``key_fn(record)``.

    Opening it reads what an earlier run wrote. A last line cut off by a crash (not valid JSON) is
    dropped and the file rewritten without it, so appending after it cannot glue two records
    together. ``append`` writes a batch, flushes and fsyncs it: a batch is on disk before the next
    one starts.
    """

    def __init__(self, path: str | Path, key_fn: Callable[[dict[str, Any]], Any]):
        self.path = Path(path)
        self.key_fn = key_fn
        self.records: dict[Any, dict[str, Any]] = {}
        self.repaired = 0
        if self.path.exists():
            good_lines = []
            for line in self.path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.repaired += 1
                    continue
                key = key_fn(record)
                if key not in self.records:  # a duplicate cannot arise from append(); keep the first
                    self.records[key] = record
                    good_lines.append(line)
            if self.repaired:
                from falcon_h1r.results import atomic_write_text

                atomic_write_text(self.path, "".join(ln + "\n" for ln in good_lines))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __contains__(self, key: Any) -> bool:
        return key in self.records

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.path, "a") as fh:
            for record in records:
                self.records[self.key_fn(record)] = record
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
