"""Similarity-map overlays (matplotlib, Agg): the model's input as displayed, with where a class
(or a text) matches drawn over it."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from domainclip.core.fileio import whole_file  # noqa: E402


def display_image(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) floats in 0..1 of one preprocessed (C, H, W) input, as the reader rendered it
    (windowed DICOM, RGB tile, false-colour chip): the normalisation is undone; one channel is
    shown grey, more than three (bands before a learnt projection) as their first three, each
    stretched to its own range."""
    x = pixels.detach().float().cpu()
    if len(mean) == x.shape[0]:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:  # a band count other than the tower's: stretch each shown band to 0..1
        x = x[:3]
        low, high = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-8)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def save_overlay(path: Path, image: np.ndarray, heat: torch.Tensor, title: str) -> None:
    """Write a PNG: the image beside the image with ``heat`` (H, W) overlaid, its colour bar in
    the map's own units (probability, cosine similarity, or a probe's logit)."""
    heat = heat.detach().float().cpu().numpy()
    fig, (plain, over) = plt.subplots(1, 2, figsize=(7.2, 3.4))
    plain.imshow(image)
    over.imshow(image)
    shown = over.imshow(heat, cmap="inferno", alpha=0.55)
    peak = np.unravel_index(int(np.nanargmax(heat)), heat.shape)  # NaN: no tile there (whole slides)
    over.plot(peak[1], peak[0], "+", color="cyan", markersize=12, mew=2)
    fig.colorbar(shown, ax=over, fraction=0.046, pad=0.04)
    for ax in (plain, over):
        ax.set_axis_off()
    over.set_title("+ = the map's maximum", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def overlay_png(path: Path, image: np.ndarray, heat: torch.Tensor) -> None:
    """The image and, beside it, the image with ``heat`` (min-max scaled, inferno) blended over it."""
    h = heat.detach().float().cpu().numpy()
    h = (h - h.min()) / max(float(h.max() - h.min()), 1e-8)
    colour = matplotlib.colormaps["inferno"](h)[..., :3]
    blended = 0.45 * image + 0.55 * colour
    gap = np.ones((image.shape[0], 4, 3))
    with whole_file(path) as tmp:
        Image.fromarray((np.concatenate([image, gap, blended], axis=1) * 255).round().astype(np.uint8)).save(tmp)


def slug(text: str) -> str:
    """A file-name-safe form of a class name or text."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "text"
