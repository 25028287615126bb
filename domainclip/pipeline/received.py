"""Configs that arrive with a bundle or a run capsule, checked before Hydra or a run reads them.

A bundle's ``reproduce.yaml`` and a capsule's ``config.yaml`` are data someone else wrote. Hydra
instantiates every ``_target_`` it meets (``pathlib.Path.write_text`` passes Hydra's own
blocklist) and its ``hydra:`` section configures logging and callbacks, which can name any
callable. So a received config is verified against the bundle's ``SHA256SUMS`` first, may not
carry a ``hydra`` section or a defaults list, and each ``_target_`` in it must be one that
domainclip's shipped configs use. What a user types on the command line stays free.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from domainclip.core.errors import ConfigError
from domainclip.core.paths import config_dir
from domainclip.core.safe_yaml import load_yaml_file

RECEIVED_MARKERS = ("SHA256SUMS", "metadata.json")  # a folder holding these is a bundle
FORBIDDEN_TOP = ("hydra", "defaults")  # logging/callback factories and config includes


def _targets(node, found: list[tuple[str, object]], where: str = "") -> list[tuple[str, object]]:
    """Every ``_target_`` value under ``node`` (with the key path that holds it)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found.append((where or "(top)", value))
            else:
                _targets(value, found, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _targets(value, found, f"{where}[{i}]")
    return found


@lru_cache(maxsize=1)
def shipped_targets() -> frozenset[str]:
    """The ``_target_`` values of domainclip's own config groups and recipes: the allow-list."""
    allowed = set()
    for path in config_dir().rglob("*.yaml"):
        allowed.update(str(t) for _, t in _targets(yaml.safe_load(path.read_text()) or {}, []))
    return frozenset(allowed)


def check_received_config(path: Path) -> None:
    """Refuse a received config file that could run code: a ``hydra`` or ``defaults`` section, or
    a ``_target_`` outside :func:`shipped_targets`; one ``ConfigError`` line naming the key."""
    data = load_yaml_file(path, "received config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping of config keys")
    for key in FORBIDDEN_TOP:
        if key in data:
            raise ConfigError(f"{path}: a received config may not carry a '{key}' section (it can name code to run); "
                              "remove it, or pass such settings on your own command line")
    allowed = shipped_targets()
    for where, target in _targets(data, []):
        if not isinstance(target, str) or target not in allowed:
            raise ConfigError(f"{path}: {where}._target_={str(target)[:100]!r} is not one of the classes domainclip's "
                              "own configs use; a received config may not name code. Set it on your own command "
                              "line if you trust it")


def is_bundle(folder: Path) -> bool:
    """A folder holding ``SHA256SUMS`` or ``metadata.json``."""
    return any((Path(folder) / m).is_file() for m in RECEIVED_MARKERS)


def is_received(folder: Path) -> bool:
    """A bundle or a run capsule folder."""
    return Path(folder).name == "capsule" or is_bundle(folder)


def check_received_dir(folder: Path, config_name: str, argv: list[str] = ()) -> None:
    """For ``--config-dir FOLDER --config-name NAME``: when FOLDER is a bundle, its files must
    match ``SHA256SUMS``; when it is a bundle or capsule, the config must pass
    :func:`check_received_config` and the run must write outside it (``argv``: the command line).
    Any other folder is the user's own."""
    from domainclip.export.loader import verify_sums

    folder = Path(folder)
    if not is_received(folder):
        return
    check_output_outside(folder, list(argv))
    if is_bundle(folder):
        verify_sums(folder)
    name = config_name if config_name.endswith((".yaml", ".yml")) else f"{config_name}.yaml"
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"{path}: no such config in {folder}")
    check_received_config(path)


def check_output_outside(folder: Path, argv: list[str]) -> None:
    """A run from a received folder writes its outputs outside it: Hydra's run directory (the
    ``hydra.run.dir=`` override, else ``outputs/`` under the working directory) may not lie inside
    the bundle or capsule, which would then fail its checksums."""
    folder = Path(folder).resolve()
    given = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), None)
    target = Path(given or "outputs").resolve()
    if target == folder or folder in target.parents:
        raise ConfigError(f"this rerun would write {target} inside {folder}; run it from a directory outside the "
                          "bundle (cd elsewhere), or pass hydra.run.dir=DIR outside it")


def hydra_flag(argv: list[str], long: str, short: str) -> str | None:
    """The value of Hydra's ``--config-dir``-style flag in ``argv`` (``--flag V``, ``--flag=V``,
    ``-f V``), or None."""
    for i, arg in enumerate(argv):
        for flag in (long, short):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1:]
    return None

