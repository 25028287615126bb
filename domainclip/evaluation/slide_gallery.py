"""The report's slide gallery for slide-level runs: for each class, the most confident correct, the
most confident wrong and the most uncertain test slide, drawn as the slide's thumbnail with the
model's tile weights over it (attention for gated-attention MIL, the top-k tiles for MI-Zero top-k,
uniform for mean pooling) and the slide's highest-weighted tiles beside it. Pictures and their
names carry no identifier: a slide is named by its number, class and kind, and its patient by a
pseudonym salted with the card digest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from domainclip.core.fileio import whole_file
from domainclip.core.names import file_slug
from domainclip.data import CardData
from domainclip.data.bags import BagDataset
from domainclip.data.expand import cell_side
from domainclip.evaluation.clinical import Predictions
from domainclip.evaluation.evaluators import evaluator_of
from domainclip.evaluation.gallery import pick_cases
from domainclip.evaluation.overlays import slug
from domainclip.readers import read
from domainclip.readers.wsi import open_slide
from domainclip.shards.build import pseudonym

THUMB_SIDE = 512
TOP_TILES = 4


def weight_canvas(shape: tuple[int, int], coords: torch.Tensor, weights: torch.Tensor, side: int,
                  scale: float) -> np.ndarray:
    """(H, W) map of each tile's weight over its footprint on a thumbnail ``scale`` times level 0
    (NaN where no tile lies)."""
    canvas = np.full(shape, np.nan, np.float32)
    span = max(1, int(round(side * scale)))
    for (x, y), w in zip(coords.tolist(), weights.tolist()):
        r, c = int(y * scale), int(x * scale)
        canvas[r : r + span, c : c + span] = w
    return canvas


def draw_slide(path: Path, thumb: np.ndarray, heat: np.ndarray, tiles: list[np.ndarray], title: str) -> None:
    """Thumbnail with the weight map over it, and the top tiles in a column beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7.5, 5))
    grid = fig.add_gridspec(len(tiles) or 1, 2, width_ratios=[4, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(thumb)
    shown = ax.imshow(np.ma.masked_invalid(heat / np.nanmax(heat) if np.isfinite(heat).any() else heat),
                      cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.04, label="tile weight (max = 1)")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    for i, tile in enumerate(tiles):
        tax = fig.add_subplot(grid[i, 1])
        tax.imshow(tile)
        tax.set_title(f"top tile {i + 1}", fontsize=7)
        tax.axis("off")
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


@torch.inference_mode()
def write_slide_gallery(report_dir: Path, model, data: CardData, dataset: BagDataset, test: Predictions,
                        clinical: dict) -> list[dict]:
    """Write ``report_dir/slides/*.png`` for a slide-level run's test split; returns the cases
    (class, kind, predicted, probability, true label, patient pseudonym, file) for the report."""
    records = data.splits.get("test") or []
    if not records:
        return []
    probs = evaluator_of(clinical).probabilities(test.logits.float(), clinical)
    names, options = data.class_names, data.card.reader.options
    folder = report_dir / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    cases = []
    for n, (k, kind, row) in enumerate(pick_cases(probs, test.targets)):
        record = records[row]
        item = dataset[row]
        _, weights = model.bag_outputs(BagDataset.collate([item]))
        coords = item["coords"]
        slide = open_slide(str(record.path), options.get("backend", "tiffslide"))
        thumb = np.asarray(slide.get_thumbnail((THUMB_SIDE, THUMB_SIDE)).convert("RGB"))
        scale = thumb.shape[1] / slide.dimensions[0]
        heat = weight_canvas(thumb.shape[:2], coords, weights[0], cell_side("wsi", record.path, options), scale)
        top = weights[0][: len(coords)].argsort(descending=True)[:TOP_TILES].tolist()
        tiles = [read(record.path, reader="wsi", **{**options, **dict(zip("xy", coords[i].tolist()))})[0]
                 .transpose(1, 2, 0).clip(0, 255).astype(np.uint8) for i in top]
        shown = int(probs[row].argmax())
        file = f"slide{n:02d}-{file_slug(k, names[k])}-{slug(kind)}.png"
        title = f"{kind}: predicted {names[shown]} ({float(probs[row, shown]):.2f}), true {names[int(test.targets[row])]}"
        draw_slide(folder / file, thumb, heat, tiles, title)
        cases.append({"class": names[k], "kind": kind, "predicted": names[shown], "probability": float(probs[row, shown]),
                      "true": names[int(test.targets[row])], "group": pseudonym(record.group, data.digest),
                      "file": f"slides/{file}"})
    return cases


def slide_gallery_section(cases: list[dict]) -> str:
    """The report's markdown for the slide gallery (empty when there is none)."""
    if not cases:
        return ""
    lines = ["## Slide gallery (test; thumbnail with each tile's weight in the slide score, and the top tiles)", "",
             "| class | case | predicted (p) | true | patient (pseudonym) | slide and weights |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['class']} | {c['kind']} | {c['predicted']} ({c['probability']:.2f}) | {c['true']} | "
              f"`{c['group']}` | ![{c['kind']}]({c['file']}) |" for c in cases]
    return "\n".join(lines) + "\n\n"
