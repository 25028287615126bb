"""Deterministic generators of the offline demo datasets (clearly synthetic)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from domainclip.core.paths import cache_dir
from domainclip.core.registry import Registry
from domainclip.demo import pathology, radiology, satellite, slides
from domainclip.demo.common import ensure_generated

DEMOS: Registry = Registry("demo dataset")
for _name, _module in (("pathology", pathology), ("radiology", radiology), ("satellite", satellite),
                       ("slides", slides)):
    DEMOS.register(_name)(_module.generate)
    DEMOS.register(f"{_name}_site_b")(_module.generate_site_b)


def demo_root(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """Return the demo's folder, generating it first if missing or incomplete."""
    generate = DEMOS.get(name)
    root = Path(root) if root else cache_dir() / "demo" / f"{name}-seed{seed}"
    return ensure_generated(root, name, seed, generate)


def finding_masks(root: Path, records: list) -> tuple[list, list[np.ndarray]]:
    """The records of a generated demo whose labelled class the generator drew, with that class's
    (H, W) boolean mask: ``masks/`` beside the data holds, per file (same relative path without
    its top folder, as PNG), the class index drawn at each pixel."""
    kept, masks = [], []
    for record in records:
        rel = Path(record.path).relative_to(root)
        drawn = np.array(Image.open(root / "masks" / Path(*rel.parts[1:]).with_suffix(".png")))
        if (drawn == record.label).any():
            kept.append(record)
            masks.append(drawn == record.label)
    return kept, masks
