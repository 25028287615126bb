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


DISK_CHUNK = 512  # disks evaluated together: bounds the (chunk, box, box) temporaries


def disks(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Float mask (H, W) of the union of disks, with a 1-pixel soft edge. Each disk is evaluated on
    its bounding box only, all disks of a chunk at once, and merged with an element-wise maximum
    (order-free, so the result is the same as drawing them one by one)."""
    centres, radii = np.asarray(centres).reshape(-1, 2), np.asarray(radii).reshape(-1)
    mask = np.zeros(shape, np.result_type(np.float32, centres, radii))
    for start in range(0, len(radii), DISK_CHUNK):
        _draw_disks(mask, centres[start:start + DISK_CHUNK], radii[start:start + DISK_CHUNK])
    return mask


def _draw_disks(mask: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> None:
    """Max-merge the soft disks into ``mask`` in place, evaluated on a common box size."""
    cy, cx = centres[:, 0], centres[:, 1]
    y0 = np.maximum(np.floor(cy - radii - 2).astype(np.int64), 0)
    y1 = np.minimum(np.ceil(cy + radii + 2).astype(np.int64) + 1, mask.shape[0])
    x0 = np.maximum(np.floor(cx - radii - 2).astype(np.int64), 0)
    x1 = np.minimum(np.ceil(cx + radii + 2).astype(np.int64) + 1, mask.shape[1])
    side = int(max((y1 - y0).max(initial=0), (x1 - x0).max(initial=0)))  # 0: every box is empty
    if side == 0:
        return
    offset = np.arange(side)
    ys, xs = y0[:, None] + offset, x0[:, None] + offset  # (N, side) rows and columns of each box
    dy = ys.astype(np.float32)[:, :, None] - cy[:, None, None]
    dx = xs.astype(np.float32)[:, None, :] - cx[:, None, None]
    value = np.clip(radii[:, None, None] + 0.5 - np.sqrt(dy**2 + dx**2), 0.0, 1.0)
    inside = (ys < y1[:, None])[:, :, None] & (xs < x1[:, None])[:, None, :] & (value > 0)
    flat = (ys[:, :, None] * mask.shape[1] + xs[:, None, :])[inside]
    np.maximum.at(mask.reshape(-1), flat, value[inside].astype(mask.dtype))


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
