"""Shared helpers for the synthetic demo datasets: cache layout, manifests, README."""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from domainclip.core.distributed import computed_once

DEMO_VERSION = 4
MARKER = ".domainclip-demo.json"


def disks(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Float mask (H, W) of the union of disks, with a 1-pixel soft edge."""
    mask = np.zeros(shape, np.result_type(np.float32, np.asarray(centres), np.asarray(radii)))
    for (cy, cx), r in zip(centres, radii):  # only the disk's bounding box can change
        y0, y1 = max(int(np.floor(cy - r - 2)), 0), min(int(np.ceil(cy + r + 2)) + 1, shape[0])
        x0, x1 = max(int(np.floor(cx - r - 2)), 0), min(int(np.ceil(cx + r + 2)) + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        box = (slice(y0, y1), slice(x0, x1))
        yy, xx = np.arange(y0, y1, dtype=np.float32)[:, None], np.arange(x0, x1, dtype=np.float32)[None]
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        mask[box] = np.maximum(mask[box], np.clip(r + 0.5 - d, 0.0, 1.0))
    return mask


def write_manifest(root: Path, rows: list[dict]) -> None:
    """Write ``manifest.csv`` with the rows' keys as columns."""
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


NO_FINDING = 255  # a finding map's value where no class was drawn


def write_class_map(path: Path, class_map: np.ndarray) -> None:
    """An 8-bit PNG of where the generator drew each class: its index per pixel, ``NO_FINDING``
    where none (``demo.finding_masks`` reads them back)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(class_map.astype(np.uint8)).save(path)


def write_readme(root: Path, title: str, body: str) -> None:
    """Every demo folder says plainly that it is synthetic."""
    (root / "README.md").write_text(
        f"# {title} (SYNTHETIC DEMO DATA)\n\nGenerated deterministically by domainclip for offline demos "
        f"and tests. These are not real patient or satellite images and carry no real identities.\n\n{body}\n"
    )


def generator_digest(generate: Callable) -> str:
    """SHA-256 of the generator's module and this one: a changed generator regenerates its demo."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(inspect.getfile(generate)).read_bytes())
    return digest.hexdigest()[:16]


def ensure_generated(root: Path, name: str, seed: int, generate: Callable[[Path, int], None]) -> Path:
    """Generate the demo into ``root`` unless a complete copy of this version and seed is there."""

    with computed_once(root):
        return _generate_unless_present(root, name, seed, generate)


def _generate_unless_present(root: Path, name: str, seed: int, generate: Callable[[Path, int], None]) -> Path:
    marker = root / MARKER
    want = {"name": name, "version": DEMO_VERSION, "seed": seed, "code": generator_digest(generate)}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    if root.exists():
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    generate(tmp, seed)
    (tmp / MARKER).write_text(json.dumps(want))
    tmp.rename(root)
    return root
