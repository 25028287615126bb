"""The Tower contract: a pretrained image encoder and text encoder with projection heads."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.core.registry import Registry
from domainclip.transforms.pipeline import Preprocess

TOWERS: Registry = Registry("tower")


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the bytes of weight files (sorted by name) identifying a base tower."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a transformers model directory."""
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    return files


class Tower(nn.Module):
    """Image + text encoders. Subclasses set ``image_encoder``, ``text_encoder``,
    ``preprocess``, ``tokenizer``, ``lora_targets`` and implement the four stage methods.

    ``encode_image = image_head(image_features(pixels))``: the split lets frozen backbones
    cache ``image_features`` while heads train.
    """

    preprocess: Preprocess
    lora_targets: dict[str, list[str]]
    max_text_length: int = 77
    heads_pretrained: bool = True  # False for LiT pairs whose projections start random
    trim_padding: bool = True  # drop all-padding columns before encoding (exact unless pooling reads padding)

    def __init__(self, init_logit_scale: float = math.log(1 / 0.07)):
        super().__init__()
        self.log_logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias: nn.Parameter | None = None

    @property
    def logit_scale(self) -> torch.Tensor:
        """Exponentiated temperature, clamped at 100 as in CLIP."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    def train(self, mode: bool = True) -> "Tower":
        """Like ``nn.Module.train``, but normalisation layers whose weights are frozen stay in
        eval mode, so a frozen backbone's running statistics never drift."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Backbone features (before the head)."""
        return self.backbone_features(pixels)

    def backbone_features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised pixels -> (B, D) unnormalised embeddings."""
        return self.image_head(self.image_features(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask -> (B, D) unnormalised embeddings."""
        if self.trim_padding and attention_mask.shape[0]:
            length = int(attention_mask.sum(1).max())
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        return self.text_head(self.text_features(input_ids, attention_mask))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise once (never per step); returns ``input_ids`` and ``attention_mask``."""
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def token_embedding(self) -> nn.Embedding:
        """The text tower's token-embedding layer (for prompt learning)."""
        base = getattr(self.text_encoder, "get_base_model", lambda: self.text_encoder)()
        if hasattr(base, "get_input_embeddings"):
            try:
                return base.get_input_embeddings()
            except NotImplementedError:
                pass
        return base.embeddings.token_embedding

    @property
    def embed_dim(self) -> int:
        """Dimension of the shared embedding space."""
        tok = self.tokenize(["x"])
        with torch.no_grad():
            return int(self.encode_text(tok["input_ids"], tok["attention_mask"]).shape[-1])

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, h, w, F) backbone features per image location, such that ``image_head`` maps each
        into the shared space (for similarity maps)."""
        raise ConfigError(f"tower '{type(self).__name__}' gives no per-location features yet; similarity maps "
                          "support the EfficientNet default and transformers CLIP and SigLIP towers")

    def vision_embeddings(self) -> tuple[nn.Module, int]:
        """The ViT patch-embedding module and hidden size (for visual prompt tuning)."""

        raise ConfigError(f"tower '{type(self).__name__}' has no ViT image encoder; visual prompts need one")

    def lora_scope(self, sides: list[str]) -> tuple[nn.Module, dict[str, str]]:
        """The module LoRA wraps for these sides (its peft base) and each side's name prefix in it."""
        raise NotImplementedError

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Projection heads and temperature: what a LiT-style method trains besides adapters."""
        raise NotImplementedError

    def enable_activation_checkpointing(self) -> None:
        """Recompute transformer-block activations in backward (``transformers`` gradient
        checkpointing) in every submodel that supports it: less memory, about 30% more compute."""
        from transformers import PreTrainedModel

        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def save_merged(self, merged: nn.Module, target: Path, sides: list[str]) -> None:
        """Save ``merged`` (the ``lora_scope`` module with LoRA folded into its weights) where a user
        loads it without domainclip: transformers' ``save_pretrained``, with the trained
        temperature and, when the text side changed, the tokenizer."""
        if not hasattr(merged, "save_pretrained"):
            raise ConfigError("export.merge=true needs the LoRA'd side(s) to form one transformers model; "
                              "with a two-tower model use method.sides=[text]")
        if hasattr(merged, "logit_scale"):
            with torch.no_grad():
                merged.logit_scale.copy_(self.log_logit_scale.detach())
        merged.save_pretrained(target, safe_serialization=True)
        if "text" in sides:
            self.tokenizer.save_pretrained(target)

    source_keys: tuple[str, ...] = ("path",)  # config keys (dotted) that locate base weights

    @classmethod
    def source_files(cls, cfg: dict) -> list[Path]:
        """The base weight files a tower config points at (digested before anything is built)."""
        raise NotImplementedError

    def weights_digest(self) -> str:
        """Digest of the base (pretrained) weights, recorded in bundles."""
        raise NotImplementedError


def hub_options(trust_remote_code: bool = False, revision: str | None = None) -> dict:
    """``from_pretrained`` keywords. Remote code runs only when asked for *and* pinned to a full
    commit SHA, so the code that runs is the code that was reviewed."""
    import re

    if trust_remote_code and not re.fullmatch(r"[0-9a-f]{40}", str(revision or "")):
        raise ConfigError(f"tower.trust_remote_code=true needs tower.revision pinned to a 40-hex commit SHA "
                          f"(got {revision!r}): remote code from a moving branch is refused")
    return {"trust_remote_code": bool(trust_remote_code), **({"revision": revision} if revision else {})}


def tower_class(name: str) -> type[Tower]:
    """The registered tower class for ``name`` (the ``domainclip.towers`` package, imported
    before this module, registers the built-in towers)."""
    return TOWERS.get(name)


def build_tower(cfg: dict) -> Tower:
    """Build the tower named by ``cfg['name']`` from its plain config."""
    cfg = dict(cfg)
    checkpointing = bool(cfg.pop("activation_checkpointing", False))
    tower = tower_class(cfg.pop("name"))(**cfg)
    if checkpointing:
        tower.enable_activation_checkpointing()
    return tower
