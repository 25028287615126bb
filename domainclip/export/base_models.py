"""Where a bundle's base tower comes from: the user or this machine's registry, never the bundle.

A bundle records its base tower by a portable name (hub id, or the model directory's name) and
the SHA-256 digest of the base weights. Loading finds the weights, in this order, at
1. the ``base`` the caller passes (``load_bundle(path, base=DIR)``, ``evaluate base=DIR``);
2. this machine's registry, ``$DOMAINCLIP_CACHE/base_models.json``, digest -> local directories,
   which every export on this machine fills in (``register_base``);
3. the Hugging Face hub cache, offline, when the recorded name is a hub id;
4. the weights shipped inside domainclip's own dependencies (the embedded default).
Paths written in a bundle are never followed, remote code is never enabled by a bundle, a base
inside the bundle is refused, and the digest is checked on the files before anything is built.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from filelock import FileLock

from domainclip.core.errors import BundleError
from domainclip.core.fileio import atomic_write_text
from domainclip.core.paths import cache_dir
from domainclip.towers.base import files_digest, tower_class
from domainclip.towers.two_tower import EFFNET, MINILM

EMBEDDED = {EFFNET, MINILM}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
CODE_KEYS = ("trust_remote_code", "revision")


def registry_file() -> Path:
    """This machine's digest -> base-model directories registry."""
    return cache_dir() / "base_models.json"


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set(cfg: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _local(value) -> Path | None:
    p = Path(str(value)).expanduser() if value else None
    return p.resolve() if p is not None and p.exists() else None


def local_sources(cfg: dict) -> dict[str, Path]:
    """The tower config's base-model sources that are paths on this machine (embedded names aside)."""
    found = {}
    for key in tower_class(cfg["name"]).source_keys:
        value, local = _get(cfg, key), _local(_get(cfg, key))
        if local is not None and str(value) not in EMBEDDED:
            found[key] = local
    return found


def portable_config(cfg: dict) -> dict:
    """The tower config with each local base-model path replaced by its directory (or file) name."""
    out = json.loads(json.dumps(cfg))
    for key, local in local_sources(cfg).items():
        _set(out, key, local.name)
    return out


def register_base(cfg: dict, digest: str) -> None:
    """Remember where this machine keeps the base weights of ``digest`` (local paths only)."""
    sources = {k: str(v) for k, v in local_sources(cfg).items()}
    if not sources:
        return
    path = registry_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        entries = _read_registry(path)
        entries[digest] = sources
        atomic_write_text(path, json.dumps(entries, indent=2, sort_keys=True))


def _read_registry(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _hub_snapshot(name: str) -> str | None:
    if not HUB_ID.match(name) or ".." in name:
        return None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the local cache (or not a hub id)
        return None


def _candidates(key: str, recorded, digest: str, base) -> list[str]:
    if base:
        return [str(Path(str(base)).expanduser())]
    entries = _read_registry(registry_file())
    found = [entries.get(digest, {}).get(key)]
    found += [e.get(key) for e in entries.values()  # same name, other weights: the digest check says so
              if isinstance(e, dict) and recorded and Path(str(e.get(key, ""))).name == str(recorded)]
    if recorded:
        found.append(_hub_snapshot(str(recorded)))
    return [c for c in found if c]


def _base_for(key: str, keys: tuple[str, ...], base, bundle: Path):
    """The caller's base for one source key: a dict by key, or a single path for one-source towers."""
    if isinstance(base, dict):
        return base.get(key)
    if base and len(keys) > 1:
        raise BundleError(f"{bundle}: this tower has several base sources {list(keys)}; pass base as a dict "
                          "keyed by them")
    return base


def resolve_base(bundle: Path, tower: dict, base=None, verify: bool = True) -> dict:
    """The tower config to build, with each base-model source found on this machine and the
    weights' digest verified against the bundle's, before anything is built."""
    cfg, digest = json.loads(json.dumps(tower["config"])), tower["weights_digest"]
    if cfg.get("trust_remote_code"):
        raise BundleError(f"{bundle}/metadata.json: tower.config.trust_remote_code is true; a bundle may not "
                          "turn on remote code. Build the base tower yourself and pass load_bundle(path, base=DIR)")
    for key in CODE_KEYS:
        cfg.pop(key, None)
    cls = tower_class(str(cfg.get("name")))
    root = bundle.resolve()
    for key in cls.source_keys:
        recorded, given = _get(cfg, key), _base_for(key, cls.source_keys, base, bundle)
        if recorded is None or (str(recorded) in EMBEDDED and not given):
            continue
        found = _candidates(key, recorded, digest, given)
        if not found:
            raise BundleError(f"{bundle}: base model '{recorded}' (weights sha256 {digest[:16]}…) is not on this "
                              f"machine; pass load_bundle(path, base=DIR) (or evaluate base=DIR) with its directory")
        where = Path(found[0]).resolve()
        if where == root or root in where.parents:
            raise BundleError(f"{bundle}: the base model may not come from inside the bundle ({where})")
        _set(cfg, key, str(where))
    if not verify:
        return cfg
    try:
        actual = files_digest(cls.source_files(cfg))
    except Exception as exc:  # noqa: BLE001 - unreadable or missing base weights
        raise BundleError(f"{bundle}: cannot read the base model's weights ({exc}); pass base=DIR") from None
    if actual != digest:
        raise BundleError(f"{bundle}: the base tower's weights differ from those the bundle was trained on "
                          f"(digest {digest[:16]}…); load the same base weights")
    return cfg
