"""File hashes cached by (path, size, mtime): only new or touched files are read again.

The cache is keyed by a digest of the file's path, never the path itself: clinical exports name
files by patient, and a cache outlives the run (and its PHI rules) in the user's home."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from domainclip.core.distributed import computed_once
from domainclip.core.fileio import atomic_write_text, sha256_file
from domainclip.core.paths import cache_dir


class HashCache:
    """SHA-256 per file, reused while (size, mtime_ns) are unchanged; kept in
    ``$DOMAINCLIP_CACHE/file_hashes.json`` unless ``path`` says otherwise."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir() / "file_hashes.json"
        self.entries = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.dirty = False

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, read again only when its size or mtime changed."""
        st = Path(path).stat()
        key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        if hit and hit["stamp"] == stamp:
            return hit["sha256"]
        digest = sha256_file(path)
        self.entries[key], self.dirty = {"stamp": stamp, "sha256": digest}, True
        return digest

    def save(self) -> None:
        """Write the cache (one process at a time) when something was hashed."""
        if not self.dirty:
            return
        with computed_once(self.path):
            atomic_write_text(self.path, json.dumps(self.entries))
