"""The Method contract: which parameters train, and what gets exported."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from domainclip.registry import Registry
from domainclip.towers.base import Tower

METHODS: Registry = Registry("method")


def freeze(module: nn.Module) -> None:
    """Turn off gradients for every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)


class Method:
    """Base class. ``prepare`` freezes/unfreezes/injects; ``trains`` says if fitting happens."""

    name = "base"
    trains = True

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, train_heads: bool = True):
        self.lr, self.weight_decay, self.train_heads = float(lr), float(weight_decay), bool(train_heads)

    def prepare(self, tower: Tower) -> None:
        """Freeze everything, then open up the heads (and temperature) if configured."""
        freeze(tower)
        if self.train_heads:
            for t in tower.head_state_dict().values():
                t.requires_grad_(True)
        if tower.input_adapter is not None:
            tower.input_adapter.requires_grad_(True)

    @property
    def image_backbone_frozen(self) -> bool:
        """True when image features can be computed once and cached."""
        return True

    export_files: tuple[str, ...] = ()

    def export(self, tower: Tower, out_dir: Path) -> None:
        """Write this method's weights (``export_files``) into ``out_dir``, safetensors only."""

    def load(self, tower: Tower, bundle_dir: Path) -> None:
        """Apply the weights written by ``export`` to a freshly built tower."""


def build_method(cfg: dict) -> Method:
    """Build the method named by ``cfg['name']``."""
    from domainclip import methods  # noqa: F401 - registers the built-in methods

    cfg = dict(cfg)
    return METHODS.get(cfg.pop("name"))(**cfg)
