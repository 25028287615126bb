"""``tower=open_clip``: open_clip checkpoints (RemoteCLIP, GeoRSCLIP, QuiltNet, BiomedCLIP,
UniMed-CLIP, CoCa) converted into transformers modules, with neither open_clip nor timm nor
torchvision installed. peft LoRA (q, k, v and output projections of both sides), CoOp/CoCoOp,
VPT, activation checkpointing, FSDP wrapping and merging work as for ``hf_clip``."""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from domainclip.towers.base import TOWERS, Tower, files_digest
from domainclip.towers.hf_clip import OPENAI_MEAN, OPENAI_STD, clip_value_tokens, patch_grid, value_path
from domainclip.towers.openclip.blocks import write_back
from domainclip.towers.openclip.checkpoint import (
    denormalise_keys,
    normalise_keys,
    read_checkpoint,
    read_weights,
    resolve_source,
    weight_files,
    write_checkpoint,
)
from domainclip.towers.openclip.text import build_text, coca_pooled, hf_pooled
from domainclip.towers.openclip.tokenizer import build_tokenizer
from domainclip.towers.openclip.vision import build_vision
from domainclip.transforms.pipeline import Preprocess

log = logging.getLogger(__name__)


# where each part of a converted side sits in ``OpenClipModel`` (named as in transformers' ``CLIPModel``)
SLOTS = {"vision": {"net": "vision_model", "head": "visual_projection", "pool": "visual_pool"},
         "text": {"net": "text_model", "head": "text_projection"}}


class OpenClipModel(nn.Module):
    """The converted model: transformers image and text models and open_clip's projections
    (named as in transformers' ``CLIPModel``, so LoRA scopes and checkpoints read alike)."""

    def __init__(self, vision, text):
        super().__init__()
        for side, part in (("vision", vision), ("text", text)):
            for field, name in SLOTS[side].items():
                setattr(self, name, getattr(part, field))  # visual_pool: CoCa's pooler, else None


def model_origins(vision, text) -> dict:
    """The checkpoint origin of every converted tensor, by its name in ``OpenClipModel``."""
    out = {}
    for side, part in (("vision", vision), ("text", text)):
        for name, origin in part.origins.items():
            field, _, rest = name.partition(".")
            out[f"{SLOTS[side][field]}.{rest}"] = origin
    return out


def preprocess_from(pre: dict, vision_cfg: dict) -> Preprocess:
    """open_clip's preprocessing config (its defaults where a key is absent): size, mean, std,
    resize mode and interpolation."""
    size = pre.get("size", vision_cfg.get("image_size", 224))
    size = size if isinstance(size, int) else int(size[0])
    return Preprocess(size=int(size), mean=tuple(pre.get("mean", OPENAI_MEAN)), std=tuple(pre.get("std", OPENAI_STD)),
                      resize_mode=pre.get("resize_mode", "shortest"), interpolation=pre.get("interpolation", "bicubic"))


def hub_text_config(text_cfg: dict):
    """The cached transformers config of a Hugging Face text tower, or None (then inferred)."""
    name = text_cfg.get("hf_model_name")
    if not name:
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: the converter reads it off the weights
        return None


@TOWERS.register("open_clip")
class OpenClipTower(Tower):
    """An open_clip checkpoint: a directory (``open_clip_config.json`` + weights), a hub id in the
    local cache, or a weight file with ``model`` naming its open_clip architecture."""

    def __init__(self, path: str | None = None, model: str | None = None, lora_targets: dict | None = None):
        ckpt = read_checkpoint(path, model)
        cfg, state = ckpt.model_cfg, ckpt.state
        vision_cfg, text_cfg = dict(cfg.get("vision_cfg") or {}), dict(cfg.get("text_cfg") or {})
        quick = bool(cfg.get("quick_gelu", False))
        vision = build_vision(vision_cfg, state, quick)
        text = build_text(text_cfg, state, quick, hub_text_config(text_cfg))
        super().__init__(float(state["logit_scale"].reshape(())))
        if "logit_bias" in state:
            self.logit_bias = nn.Parameter(state["logit_bias"].detach().reshape(()).clone())
        self.weight_file = ckpt.weights[0]
        self.configs = {"model_cfg": cfg, "preprocess_cfg": ckpt.preprocess_cfg}
        self.origins = model_origins(vision, text)
        self.families = {"image": vision.family, "text": text.family}
        self.text_options = text.options
        self.model = OpenClipModel(vision, text)
        self.image_encoder, self.text_encoder = self.model.vision_model, self.model.text_model
        self.tokenizer = build_tokenizer(text_cfg, ckpt.directory)
        self.max_text_length = self.tokenizer.context_length
        self.trim_padding = text.family != "coca"  # CoCa's class token sits at a fixed position
        self.preprocess = preprocess_from(ckpt.preprocess_cfg, vision_cfg)
        self.lora_targets = {"image": vision.lora_targets, "text": text.lora_targets, **(lora_targets or {})}
        self.patch_size = int(vision.net.config.patch_size)
        skipped = [k for k in state if k.startswith("text_decoder.")]
        if skipped:
            log.info("CoCa captioning decoder (%d tensors) not loaded: domainclip uses the contrastive path", len(skipped))

    def tokenize(self, texts):
        return self.tokenizer(list(texts))

    # ----- image side ----------------------------------------------------------------------
    def backbone_features(self, pixels):
        out = self.image_encoder(pixel_values=pixels)
        if self.families["image"] == "clip":
            return out.pooler_output
        if self.families["image"] == "coca":
            return self.model.visual_pool(out.last_hidden_state)
        return out.last_hidden_state[:, 0]  # timm ViT: class token after the final norm

    def image_head(self, features):
        return self.model.visual_projection(features)

    def dense_features(self, pixels):
        """Per-patch features that ``image_head`` projects into the shared space, for similarity
        maps: MaskCLIP's value path through the last block (Zhou, Loy and Dai, ECCV 2022) for
        CLIP and timm ViTs; for CoCa, each patch through the attentional pooler's value path."""
        vision, family = self.image_encoder, self.families["image"]
        if family == "coca":
            tokens = self.model.visual_pool.per_token(vision(pixel_values=pixels).last_hidden_state)
        elif family == "clip":
            tokens = clip_value_tokens(vision, pixels)
        else:
            last = vision.layers[-1]
            attn = last.attention
            tokens = vision.layernorm(value_path(
                vision, pixels, last, lambda x: attn.o_proj(attn.v_proj(last.layernorm_before(x)))))
        return patch_grid(tokens, pixels, self.patch_size)

    def vision_embeddings(self):
        return self.image_encoder.embeddings, int(self.image_encoder.config.hidden_size)

    # ----- text side -----------------------------------------------------------------------
    def text_features(self, input_ids, attention_mask):
        family = self.families["text"]
        if family == "coca":
            return coca_pooled(self.text_encoder, input_ids, **self.text_options)
        if family == "hf":
            return hf_pooled(self.text_encoder, input_ids, **self.text_options)
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def text_head(self, features):
        return self.model.text_projection(features)

    # ----- adaptation and provenance -------------------------------------------------------
    def lora_scope(self, sides):
        return self.model, {"image": "vision_model.", "text": "text_model."}

    def head_state_dict(self):
        heads = {f"model.{k}": v for k, v in self.model.named_parameters()
                 if k.startswith(("visual_projection.", "text_projection."))}
        heads["log_logit_scale"] = self.log_logit_scale
        if self.logit_bias is not None:
            heads["logit_bias"] = self.logit_bias
        return heads

    def save_merged(self, merged: nn.Module, target: Path, sides: list[str]) -> list[Path]:
        """The merged model (LoRA folded in) as an open_clip checkpoint: the base checkpoint with
        every converted tensor written back in open_clip's layout (q, k, v fused again), so that
        open_clip or ``tower=open_clip`` loads it."""
        raw = read_weights(self.weight_file)
        state = normalise_keys(raw)
        converted = dict(merged.state_dict())
        converted["logit_scale"] = self.log_logit_scale.detach().reshape(state["logit_scale"].shape)
        origins = {**self.origins, "logit_scale": ("logit_scale", "same")}
        if self.logit_bias is not None:
            converted["logit_bias"] = self.logit_bias.detach().reshape(state["logit_bias"].shape)
            origins["logit_bias"] = ("logit_bias", "same")
        write_back(state, origins, converted)
        files = write_checkpoint(Path(target), self.configs["model_cfg"], self.configs["preprocess_cfg"],
                                 denormalise_keys(state, "positional_embedding" in raw))
        if "text" in sides and self.families["text"] == "hf":  # CLIP's BPE ships with open_clip itself
            self.tokenizer.tokenizer.save_pretrained(target)
        return files

    @classmethod
    def source_files(cls, cfg: dict) -> list[Path]:
        return weight_files(resolve_source(cfg.get("path")))

    def weights_digest(self) -> str:
        return files_digest([self.weight_file])

