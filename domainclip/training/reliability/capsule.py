"""The run capsule: everything needed to rerun a run and to notice what changed since.

``run_dir/capsule/`` holds

- ``config.yaml`` (resolved) and ``overrides.yaml`` (the command-line overrides);
- ``environment.json``: git SHA and dirty flag of the domainclip source, python, platform, torch /
  CUDA versions, device names, seed;
- ``pip_freeze.txt``: every installed distribution and version;
- ``data.json``: SHA-256 of every data file the card lists (and of the card), the manifest digest
  over them, and the split hash (which file went to which split).

File hashes are cached by (path, size, mtime) in ``$DOMAINCLIP_CACHE/file_hashes.json``, so only
new or touched files are read again. ``python -m domainclip.replay RUN_DIR`` checks the data
against ``data.json`` and reruns the config.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from domainclip.core.fileio import atomic_write_text
from domainclip.core.hash_cache import HashCache
from domainclip.core.paths import REPO_DIR
from domainclip.data.identifiers import PSEUDONYM, IdentifierMatcher, pseudonym, recorded_path


def data_fingerprint(data, hashes: HashCache | None = None, identifiers: dict[str, str] | None = None) -> dict:
    """Per-file SHA-256 (paths relative to the card root, pseudonymised where they name an
    identifier), the manifest digest and the split hash."""
    hashes = hashes or HashCache()
    identifying, root = IdentifierMatcher(identifiers or {}), Path(data.root).resolve()
    files = {"card": {"path": str(data.path), "sha256": hashes.sha256(data.path)}}
    entries = {}
    for split, records in data.splits.items():
        for rec in records:
            rel = recorded_path(rec.path, root, identifying)
            entries[rel] = {"sha256": hashes.sha256(rec.path), "split": split}
    hashes.save()
    manifest = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in sorted(entries.items())}).encode()).hexdigest()
    splits = hashlib.sha256(json.dumps({k: v["split"] for k, v in sorted(entries.items())}).encode()).hexdigest()
    return {"root": str(data.root), **files, "manifest_sha256": manifest, "split_hash": splits, "files": entries}


def changed_files(recorded: dict) -> list[str]:
    """Files of a recorded fingerprint that are missing or whose content changed, by name."""
    root, bad = Path(recorded["root"]), []
    hashes = HashCache()
    card = Path(recorded["card"]["path"])
    if not card.is_file() or hashes.sha256(card) != recorded["card"]["sha256"]:
        bad.append(str(card))
    hidden = _pseudonymised_files(root) if any(k.startswith(PSEUDONYM) for k in recorded["files"]) else {}
    for rel, entry in recorded["files"].items():
        path = hidden.get(rel, root / rel)
        if not path.is_file():
            bad.append(f"{path} (missing)")
        elif hashes.sha256(path) != entry["sha256"]:
            bad.append(str(path))
    hashes.save()
    return bad


def _pseudonymised_files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` by its :func:`pseudonym` (to find the files data.json hides)."""
    return {pseudonym(str(p.relative_to(root))): p for p in root.rglob("*") if p.is_file()}


def git_state() -> dict:
    """SHA and dirty flag of the git checkout domainclip runs from (null outside one)."""
    src = REPO_DIR

    def git(*args):
        return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"sha": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"sha": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}


def environment(seed: int) -> dict:
    """Versions and devices this run used."""
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"git": git_state(), "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "devices": devices or [platform.processor() or platform.machine()], "seed": int(seed)}


def pip_freeze() -> str:
    """``name==version`` of every installed distribution, sorted."""
    seen = {f"{name}=={version}" for name, version in map(_name_version, metadata.distributions()) if name}
    return "\n".join(sorted(seen, key=str.lower)) + "\n"


def _name_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """Name and Version from the head of the distribution's METADATA (or PKG-INFO): reading the
    two fields directly is ~10x faster than parsing the whole file as an e-mail message, which
    every run's capsule did for each of several hundred installed distributions."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        if key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields.get("Name"), fields.get("Version")


def overrides() -> list[str]:
    """The command-line overrides of the current Hydra run ([] outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def write_capsule(run_dir: Path, cfg: DictConfig, data, identifiers: dict[str, str] | None = None) -> Path:
    """Write ``run_dir/capsule`` (see module docstring); returns its path."""
    out = Path(run_dir) / "capsule"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides())))
    atomic_write_text(out / "environment.json", json.dumps(environment(cfg.seed), indent=2))
    atomic_write_text(out / "pip_freeze.txt", pip_freeze())
    atomic_write_text(out / "data.json", json.dumps(data_fingerprint(data, identifiers=identifiers), indent=2))
    return out
