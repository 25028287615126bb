"""Slide-level prediction from a bundle: a whole slide read as the run read it (tile grid at the
run's µm/px and tissue threshold, stain options, preprocessing), its tiles' backbone features
computed in batches, and the bundle's method pooling them (attention MIL, MI-Zero mean / top-k,
or the tile-label baseline)."""
from __future__ import annotations

from pathlib import Path

import torch

from domainclip.core.errors import ReadError
from domainclip.data.bags import TILE_MASK
from domainclip.data.expand import cell_side


@torch.inference_mode()
def slide_bag(predictor, path: str | Path, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``features`` (n, F) and level-0 ``coords`` (n, 2) of every tissue tile of ``path``."""
    cells = predictor.cells(path) if predictor.reader == "wsi" else None  # refuses a slide with no tissue tile
    if cells is None:
        raise ReadError(path, "input", f"not a whole slide for this bundle (it reads {predictor.reader} files)",
                        "use predict() for this bundle")
    feats = [predictor.model.image_features(pixels).float() for pixels in predictor._cell_batches(path, cells, batch_size)]
    coords = torch.tensor([[c["x"], c["y"]] for c in cells], dtype=torch.long)
    return {"features": torch.cat(feats), "coords": coords}


@torch.inference_mode()
def predict_slide(predictor, path: str | Path, batch_size: int = 64) -> dict:
    """One slide: calibrated ``probabilities`` (K,), ``logits`` (K,) before calibration, the
    tiles' level-0 top-left ``coords`` (n, 2), their ``attention`` (n,) (the method's weight of
    each tile in the slide score; uniform for mean pooling) and ``tile_side`` (level-0 pixels)."""
    bag = slide_bag(predictor, path, batch_size)
    batch = {"features": bag["features"][None], "coords": bag["coords"][None],
             TILE_MASK: torch.ones(1, len(bag["features"]), dtype=torch.bool)}
    logits, weights = predictor.model.bag_outputs(batch, class_embeddings=predictor._class_emb)
    return {"path": str(path), "probabilities": predictor.probabilities(logits)[0], "logits": logits[0],
            "coords": bag["coords"], "attention": weights[0],
            "tile_side": cell_side("wsi", path, predictor.reader_options)}
