"""Zero-shot: no training; the baseline in every report."""
from __future__ import annotations

from domainclip.methods.base import METHODS, Method, freeze


@METHODS.register("zero_shot")
class ZeroShot(Method):
    """Uses the tower as it is."""

    name = "zero_shot"
    training = "none"

    def __init__(self, **kwargs):
        super().__init__(train_heads=False, **{k: v for k, v in kwargs.items() if k != "train_heads"})

    def prepare(self, model) -> dict:
        freeze(model)
        return {}
