"""Where configs, recipes, data cards and caches live, installed or from a checkout."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # domainclip/ (this file is domainclip/core/paths.py)
REPO_DIR = PACKAGE_DIR.parent


def _installed_or_checkout(installed: Path, checkout: Path) -> Path:
    return installed if installed.is_dir() else checkout


def config_dir() -> Path:
    """Hydra's primary config directory (``conf/``); recipes are its ``recipe`` group."""
    return _installed_or_checkout(PACKAGE_DIR / "conf", REPO_DIR / "conf")


def data_cards_dir() -> Path:
    """Directory holding the shipped data cards."""
    return _installed_or_checkout(PACKAGE_DIR / "data_cards", REPO_DIR / "data_cards")


def cache_dir() -> Path:
    """Root of domainclip's caches: ``$DOMAINCLIP_CACHE`` or ``~/.cache/domainclip``."""
    env = os.environ.get("DOMAINCLIP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "domainclip"
