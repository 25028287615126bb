"""Append-only JSONL cache of generated captions with their provenance."""
from __future__ import annotations

import json
from pathlib import Path


class CaptionCache:
    """Entries keyed by (card digest, class, model id, prompt hash, seed); ``None`` path = memory only."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.entries[rec["key"]] = rec

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        rec = {"key": key, **entry}
        self.entries[key] = rec
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
