"""H&E stain normalisation (Macenko) through MONAI's pathology transforms."""
from __future__ import annotations

import numpy as np


def normalize_he(rgb: np.ndarray, tli: float = 240.0) -> np.ndarray:
    """Macenko-normalise an (H, W, 3) uint8 RGB tile to MONAI's reference H&E stain.

    Tiles with too little stain to estimate a stain matrix are returned unchanged.
    """
    from monai.apps.pathology.transforms import NormalizeHEStains

    try:
        return np.asarray(NormalizeHEStains(tli=tli)(np.ascontiguousarray(rgb)), dtype=np.uint8)
    except ValueError:
        return rgb
