"""WiSE-FT (Wortsman et al., 2022): interpolate zero-shot and fine-tuned weights.

The method is its inner method's adapter; the pipeline's ``weight_sweep`` objective
(``domainclip.pipeline.objectives``) trains the inner method, then sets the trained tensors to
``(1 - a) * zero_shot + a * fine_tuned`` for each ``a`` in ``alphas`` and keeps the best on val.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from domainclip.methods.base import METHODS, Method, build_method


@METHODS.register("wise_ft")
class WiseFT(Method):
    """An inner method (``lora`` by default) whose fine-tuned tensors are swept towards zero-shot.
    ``reference_card`` names another task whose zero-shot top-1 the sweep reports as retained."""

    name = "wise_ft"
    training = "weight_sweep"

    def __init__(self, inner: str | dict = "lora", inner_options: dict | None = None,
                 alphas=(0.0, 0.25, 0.5, 0.75, 1.0), reference_card: str | None = None, **kwargs):
        super().__init__(**kwargs)
        spec = {"name": inner} if isinstance(inner, str) else dict(inner)
        shared = {k: v for k, v in kwargs.items() if k in ("lr", "weight_decay", "head_lr", "train_heads")}
        self.inner = build_method({**shared, **spec, **(inner_options or {})})
        self.alphas, self.reference_card = [float(a) for a in alphas], reference_card
        self.objective, self.export_files = self.inner.objective, self.inner.export_files
        self.lr, self.weight_decay, self.head_lr = self.inner.lr, self.inner.weight_decay, self.inner.head_lr

    @property
    def image_backbone_frozen(self) -> bool:
        return self.inner.image_backbone_frozen

    @property
    def static_classes(self) -> bool:
        return self.inner.static_classes

    def prepare(self, model) -> dict[str, nn.Module]:
        return self.inner.prepare(model)

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        return self.inner.restore(model, folder)

    def save(self, model, folder: Path) -> None:
        self.inner.save(model, folder)

    def tower_tensors(self, model) -> list[str]:
        return self.inner.tower_tensors(model)

    def class_embeddings(self, model, prompts, image_emb=None):
        return self.inner.class_embeddings(model, prompts, image_emb)

    def logits(self, model, batch, prompts, class_emb=None):
        return self.inner.logits(model, batch, prompts, class_emb)

    def location_scores(self, model, features, prompts, class_emb=None):
        return self.inner.location_scores(model, features, prompts, class_emb)

    def location_logits(self, model, features, prompts, class_emb=None):
        return self.inner.location_logits(model, features, prompts, class_emb)
