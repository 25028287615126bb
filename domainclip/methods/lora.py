"""LoRA through peft on the image side, the text side or both, plus the projection heads."""
from __future__ import annotations

import re
from pathlib import Path

from domainclip.errors import ConfigError
from domainclip.methods.base import METHODS, Method, freeze

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
        self.peft_model = None

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

    def prepare(self, tower, class_names) -> None:
        from peft import get_peft_model

        super().prepare(tower, class_names)
        base, cfg = self.lora_config(tower)
        self.peft_model = get_peft_model(base, cfg)  # injects in place; the wrapper is for saving

    export_files = ("adapter_config.json", "adapter_model.safetensors")

    def export(self, tower, out_dir: Path) -> None:
        """peft's own layout: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        self.peft_model.save_pretrained(out_dir, safe_serialization=True)
        readme = Path(out_dir) / "README.md"  # peft's stub card; the bundle has MODEL_CARD.md
        if readme.is_file():
            readme.unlink()

    def load(self, tower, bundle_dir: Path, class_names) -> None:
        from peft import PeftModel

        super(LoRA, self).prepare(tower, class_names)  # heads and adapter flags, no fresh LoRA
        base, _ = tower.lora_scope(self.sides)
        self.peft_model = PeftModel.from_pretrained(base, bundle_dir)
        freeze(tower)
