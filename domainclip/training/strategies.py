"""Lightning strategies built from plain config (``trainer=ddp``, ``trainer=fsdp``).

Hydra configs name classes as dotted strings; FSDP needs the classes themselves for its wrap and
activation-checkpointing policies, so ``fsdp_strategy`` imports them. Names whose module is not
importable (an optional tower not installed) are skipped, so one list covers every tower.
"""
from __future__ import annotations

import importlib

from domainclip.core.errors import ConfigError

# transformer blocks of the towers domainclip ships configs for
TRANSFORMER_BLOCKS = (
    "transformers.models.clip.modeling_clip.CLIPEncoderLayer",
    "transformers.models.siglip.modeling_siglip.SiglipEncoderLayer",
    "transformers.models.bert.modeling_bert.BertLayer",
    "transformers.models.vit.modeling_vit.ViTLayer",
)


def import_classes(names: list[str] | tuple[str, ...]) -> set[type]:
    """The classes named by dotted paths; names in modules that are not installed are skipped."""
    classes = set()
    for name in names:
        module, _, attr = str(name).rpartition(".")
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if not hasattr(mod, attr):
            raise ConfigError(f"trainer.strategy: {module} has no class {attr!r}; fix the name in wrap_blocks")
        classes.add(getattr(mod, attr))
    return classes


def fsdp_strategy(wrap_blocks: list[str] | None = None, activation_checkpointing: bool = False,
                  sharding_strategy: str = "FULL_SHARD", **kwargs):
    """``FSDPStrategy`` that shards each transformer block (``wrap_blocks``, default: the blocks of
    every shipped tower) and optionally checkpoints their activations."""
    from pytorch_lightning.strategies import FSDPStrategy

    blocks = import_classes(wrap_blocks or TRANSFORMER_BLOCKS)
    return FSDPStrategy(auto_wrap_policy=blocks, activation_checkpointing_policy=blocks if activation_checkpointing else None,
                        sharding_strategy=sharding_strategy, use_orig_params=True, **kwargs)
