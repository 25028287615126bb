"""LoRA through peft on the image side, the text side or both, plus the projection heads."""
from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.methods.base import METHODS, Method
from domainclip.methods.lora_files import check_adapter_config, check_rank_and_shapes

SIDES = ("image", "text")


def target_regex(prefixes: dict[str, str], targets: dict[str, list[str]]) -> str:
    """A peft ``target_modules`` regex matching each side's target names under its prefix."""
    parts = []
    for side, prefix in prefixes.items():
        names = "|".join(re.escape(t) for t in targets[side])
        lead = re.escape(prefix) + r"(.*\.)?" if prefix else r"(.*\.)?"
        parts.append(f"{lead}({names})")
    return "^(" + "|".join(parts) + ")$"


MODULE_NAME = re.compile(r"^[A-Za-z0-9_.]{1,200}$")


def check_targets(targets) -> dict[str, list[str]]:
    """``method.targets``: per side, a list of module names (never patterns)."""
    targets = dict(targets or {})
    for side, names in targets.items():
        if side not in SIDES or not isinstance(names, (list, tuple)) or not all(
                isinstance(n, str) and MODULE_NAME.match(n) for n in names):
            raise ConfigError(f"method.targets.{side}={names!r}: give a list of module names (letters, digits, "
                              f"'_' and '.') for a side in {list(SIDES)}")
    return {side: list(names) for side, names in targets.items()}


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
        if self.r < 1 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.r={r}, method.dropout={dropout}: r must be >= 1 and dropout in [0, 1)")
        self.targets = check_targets(targets)

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
        """The saved adapter, loaded with this method's own ``LoraConfig``: the folder's
        ``adapter_config.json`` must agree with it and is never handed to peft, and the rank and
        tensor shapes are checked against the base model before anything is allocated."""
        from peft import PeftModel

        super().prepare(model)  # heads and adapter flags, no fresh LoRA
        base, cfg = self.lora_config(model.tower)
        check_adapter_config(folder, cfg)
        check_rank_and_shapes(folder, base, cfg)
        return {"lora": LoraHandle(PeftModel.from_pretrained(base, folder, config=cfg))}


class LoraHandle(nn.Module):
    """Holds the peft wrapper for saving and merging. The LoRA layers themselves live inside the
    tower (peft injects them in place), so the wrapper is kept out of the module tree: its
    parameters are counted once, under the tower."""

    def __init__(self, peft_model):
        super().__init__()
        object.__setattr__(self, "peft_model", peft_model)
