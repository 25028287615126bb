"""Full contrastive fine-tuning with LiT-style locking and unlocked-last-N-layers options."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.methods.base import METHODS, Method

MODEL_FILE = "model.safetensors"


def layer_stack(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's longest ModuleList: its stack of transformer layers or conv blocks."""
    lists = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not lists:
        raise ConfigError(f"cannot find a layer stack in {type(encoder).__name__}; unset method.unlocked_layers")
    return max(lists, key=lambda nm: len(nm[1]))


def unlock(encoder: nn.Module, last_n: int | None) -> None:
    """Unfreeze the whole encoder, or its last ``last_n`` layers plus what follows the stack
    (final norms, pooling heads); embeddings and stems stay frozen."""
    if last_n is None:
        encoder.requires_grad_(True)
        return
    name, stack = layer_stack(encoder)
    for layer in list(stack)[len(stack) - last_n:] if last_n > 0 else []:
        layer.requires_grad_(True)
    after = False
    for pname, p in encoder.named_parameters():
        if pname.startswith(name + "."):
            after = True
        elif after:
            p.requires_grad_(True)


@METHODS.register("full")
class Full(Method):
    """Contrastive fine-tuning of the towers: ``lock_image`` (LiT), ``lock_text``, ``unlocked_layers``."""

    name = "full"
    export_files = (MODEL_FILE,)

    def __init__(self, lock_image: bool = False, lock_text: bool = False, unlocked_layers: int | None = None, **kwargs):
        kwargs.setdefault("train_heads", True)
        super().__init__(**kwargs)
        self.lock_image, self.lock_text = bool(lock_image), bool(lock_text)
        self.unlocked_layers = None if unlocked_layers is None else int(unlocked_layers)

    @property
    def image_backbone_frozen(self) -> bool:
        return self.lock_image

    def prepare(self, model) -> dict[str, nn.Module]:
        modules = super().prepare(model)
        if not self.lock_image:
            unlock(model.tower.image_encoder, self.unlocked_layers)
        if not self.lock_text:
            unlock(model.tower.text_encoder, self.unlocked_layers)
        return modules

    def tower_tensors(self, model) -> list[str]:
        return list(model.tower.state_dict())

    def save(self, model, folder: Path) -> None:
        save_model(model.tower, str(Path(folder) / MODEL_FILE), metadata={"format": "pt"})

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        modules = super().prepare(model)
        missing, unexpected = load_model(model.tower, str(Path(folder) / MODEL_FILE), strict=False)
        if unexpected or missing:
            raise ConfigError(f"{MODEL_FILE} does not match the tower: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return modules
