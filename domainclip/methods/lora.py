"""LoRA through peft on the image side, the text side or both, plus the projection heads."""
from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.methods.base import METHODS, Method

SIDES = ("image", "text")


def target_regex(prefixes: dict[str, str], targets: dict[str, list[str]]) -> str:
    """A peft ``target_modules`` regex matching each side's target names under its prefix."""
    parts = []
    for side, prefix in prefixes.items():
        names = "|".join(re.escape(t) for t in targets[side])
        lead = re.escape(prefix) + r"(.*\.)?" if prefix else r"(.*\.)?"
        parts.append(f"{lead}({names})")
    return "^(" + "|".join(parts) + ")$"


@METHODS.register("lora")
class LoRA(Method):
    """Low-rank adapters (peft) on the chosen sides; heads train too by default."""

    name = "lora"

    def __init__(self, sides=("text",), r: int = 8, alpha: int = 16, dropout: float = 0.0,
                 targets: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.sides = list(sides)
        bad = [s for s in self.sides if s not in SIDES]
        if bad or not self.sides:
            raise ConfigError(f"method.sides={self.sides}: allowed values are {list(SIDES)}")
        self.r, self.alpha, self.dropout = int(r), int(alpha), float(dropout)
        self.targets = dict(targets or {})

    @property
    def image_backbone_frozen(self) -> bool:
        return "image" not in self.sides

    def lora_config(self, tower):
        from peft import LoraConfig

        base, prefixes = tower.lora_scope(self.sides)
        targets = {s: self.targets.get(s) or tower.lora_targets[s] for s in self.sides}
        cfg = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                         target_modules=target_regex({s: prefixes[s] for s in self.sides}, targets))
        return base, cfg

    def prepare(self, model) -> dict[str, nn.Module]:
        from peft import get_peft_model

        super().prepare(model)
        base, cfg = self.lora_config(model.tower)
        return {"lora": LoraHandle(get_peft_model(base, cfg))}  # injects in place; the wrapper saves

    export_files = ("adapter_config.json", "adapter_model.safetensors")

    def tower_tensors(self, model) -> list[str]:
        return [n for n in model.tower.state_dict() if "lora_" in n]

    def save(self, model, folder: Path) -> None:
        """peft's own layout: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        model.adapters["lora"].peft_model.save_pretrained(folder, safe_serialization=True)
        readme = Path(folder) / "README.md"  # peft's stub card; the bundle has MODEL_CARD.md
        if readme.is_file():
            readme.unlink()

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        from peft import PeftModel

        super().prepare(model)  # heads and adapter flags, no fresh LoRA
        base, _ = model.tower.lora_scope(self.sides)
        return {"lora": LoraHandle(PeftModel.from_pretrained(base, folder))}


class LoraHandle(nn.Module):
    """Holds the peft wrapper for saving and merging. The LoRA layers themselves live inside the
    tower (peft injects them in place), so the wrapper is kept out of the module tree: its
    parameters are counted once, under the tower."""

    def __init__(self, peft_model):
        super().__init__()
        object.__setattr__(self, "peft_model", peft_model)
