"""The shard set's manifest: sample counts, split, card and transform digests, SHA-256 per shard.

``manifest.json`` is written last by a build, so a set without one is incomplete. Loading checks
it against the card and the transform settings a run asks for, and each shard's checksum, and
refuses any mismatch with the command that rebuilds the set.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from domainclip.core.errors import DomainClipError
from domainclip.core.hash_cache import HashCache

FORMAT = "domainclip-webdataset-1"
SAFE_META = ("modality", "units", "spacing", "photometric", "frames", "mpp", "level", "window", "windows", "bands")


class ShardError(DomainClipError):
    """A shard set that does not match its card or its own checksums."""


def transform_digest(reader: str, reader_options: dict, transforms: dict, size: int, dtype: str,
                     resize: str = "squash/bilinear") -> str:
    """Digest of everything that shapes the stored pixels (``resize``: resize mode/interpolation,
    recorded only when not the default, so earlier shard sets keep their digest)."""
    spec = {"format": FORMAT, "reader": reader, "reader_options": reader_options, "transforms": transforms,
            "size": int(size), "dtype": dtype, **({"resize": resize} if resize != "squash/bilinear" else {})}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def rebuild_hint(card: str, out: Path) -> str:
    return f"rebuild with: python -m domainclip.shards build {card} out={out}"


def load_manifest(directory: Path, card_digest: str | None = None, transform: str | None = None,
                  card_ref: str = "CARD", verify: bool = True) -> dict:
    """The manifest of ``directory`` after checking it against the card/transform digests and
    (with ``verify``) each shard's SHA-256; raises ``ShardError`` naming the problem and the fix."""
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise ShardError(f"{directory}: no manifest.json (the build did not finish); {rebuild_hint(card_ref, directory)}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT}; {rebuild_hint(card_ref, directory)}")
    if card_digest and manifest["card_digest"] != card_digest:
        raise ShardError(f"{path}: built from another version of the data card (digest {manifest['card_digest'][:12]} "
                         f"!= {card_digest[:12]}); {rebuild_hint(card_ref, directory)}")
    if transform and manifest["transform_digest"] != transform:
        raise ShardError(f"{path}: built with other reader/transform settings (size, window, bands...); "
                         f"{rebuild_hint(card_ref, directory)}")
    if verify:
        verify_shards(directory, manifest, card_ref)
    return manifest


def verify_shards(directory: Path, manifest: dict, card_ref: str = "CARD") -> None:
    """Every shard exists and has the recorded SHA-256 (checksums cached by size and mtime)."""

    hashes = HashCache()
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            path = Path(directory) / shard["name"]
            if not path.is_file():
                raise ShardError(f"{path}: shard missing; {rebuild_hint(card_ref, directory)}")
            if hashes.sha256(path) != shard["sha256"]:
                raise ShardError(f"{path}: checksum mismatch, the shard is corrupt or was modified; "
                                 f"{rebuild_hint(card_ref, directory)}")
    hashes.save()
