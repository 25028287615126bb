"""Deterministic generators of the offline demo datasets (clearly synthetic)."""
from __future__ import annotations

from pathlib import Path

from domainclip.core.paths import cache_dir
from domainclip.core.registry import Registry
from domainclip.demo import pathology, radiology, satellite
from domainclip.demo.common import ensure_generated

DEMOS: Registry = Registry("demo dataset")
for _name, _module in (("pathology", pathology), ("radiology", radiology), ("satellite", satellite)):
    DEMOS.register(_name)(_module.generate)
    DEMOS.register(f"{_name}_site_b")(_module.generate_site_b)


def demo_root(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """Return the demo's folder, generating it first if missing or incomplete."""
    generate = DEMOS.get(name)
    root = Path(root) if root else cache_dir() / "demo" / f"{name}-seed{seed}"
    return ensure_generated(root, name, seed, generate)
