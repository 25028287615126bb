"""transformers CLIPModel (OpenAI CLIP, PLIP and any CLIP-format checkpoint)."""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.towers.base import TOWERS, Tower, files_digest, hub_options, weight_files
from domainclip.towers.two_tower import _local_or_hub
from domainclip.transforms.pipeline import Preprocess

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _preprocess_from(source: str, image_size: int) -> Preprocess:
    """Read size/mean/std from the checkpoint's image processor config when present."""
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(source)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:  # noqa: BLE001 - no processor saved: CLIP defaults
        mean, std = OPENAI_MEAN, OPENAI_STD
    return Preprocess(size=image_size, mean=mean, std=std)


def value_path(vision: nn.Module, pixels, layer: nn.Module, path):
    """MaskCLIP's value path (Zhou, Loy and Dai, ECCV 2022): run ``vision`` on ``pixels``, keep the
    input of its last block ``layer`` and return ``path(input)`` (that block's layer norm, value and
    output projections, without query-key attention, residual or MLP)."""
    captured = {}

    def grab(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        vision(pixel_values=pixels)
    finally:
        handle.remove()
    return path(captured["x"])


def clip_value_tokens(vision: nn.Module, pixels):
    """Every token of a transformers CLIP vision model through MaskCLIP's value path of its last
    block, then the post layer norm: what ``visual_projection`` maps into the shared space."""
    last = vision.encoder.layers[-1]
    attn = last.self_attn

    def values(x):
        return attn.out_proj(attn.v_proj(last.layer_norm1(x)))

    return vision.post_layernorm(value_path(vision, pixels, last, values))


def patch_grid(tokens, pixels, patch: int):
    """The last (rows x cols) tokens, one per ``patch``-wide patch of ``pixels``, as (B, rows, cols, D)."""
    rows, cols = pixels.shape[-2] // patch, pixels.shape[-1] // patch
    return tokens[:, -rows * cols:].reshape(tokens.shape[0], rows, cols, tokens.shape[-1])


@TOWERS.register("hf_clip")
class HFClipTower(Tower):
    """A CLIPModel: pooled vision/text outputs, then its own visual/text projections."""

    model_class = "CLIPModel"

    def __init__(self, path: str | None = None, max_length: int | None = None, lora_targets: dict | None = None,
                 trust_remote_code: bool = False, revision: str | None = None):
        hub = hub_options(trust_remote_code, revision)
        if not path:
            raise ConfigError(f"tower.path is required for tower '{self.model_class}': a local directory or a hub id")
        import transformers
        from transformers import AutoTokenizer

        source = _local_or_hub(path)
        model = getattr(transformers, self.model_class).from_pretrained(source, **hub)
        super().__init__(float(model.logit_scale.detach()))
        self.source = source
        self.model = model
        self.image_encoder, self.text_encoder = model.vision_model, model.text_model
        self.tokenizer = AutoTokenizer.from_pretrained(source, **hub)
        self.max_text_length = int(max_length or model.config.text_config.max_position_embeddings)
        self.preprocess = _preprocess_from(source, model.config.vision_config.image_size)
        default = {"image": ["q_proj", "v_proj"], "text": ["q_proj", "v_proj"]}
        self.lora_targets = {**default, **(lora_targets or {})}

    def lora_scope(self, sides):
        return self.model, {"image": "vision_model.", "text": "text_model."}

    def vision_embeddings(self):
        return self.model.vision_model.embeddings, self.model.config.vision_config.hidden_size

    def backbone_features(self, pixels):
        return self.image_encoder(pixel_values=pixels).pooler_output

    def dense_features(self, pixels):
        """Per-patch features for similarity maps, by MaskCLIP's value path (Zhou, Loy and Dai,
        "Extract Free Dense Labels from CLIP", ECCV 2022): the last block's input goes through its
        layer norm, value and output projections only (no query-key attention, no residual, no
        MLP), then the post layer norm, so that ``image_head`` projects each patch into the shared
        space. Plain patch tokens of the last block give noisy maps; this path is training-free and
        uses the adapted weights (LoRA on ``v_proj``/``out_proj``, visual prompts) as they are."""
        return self.patch_grid(clip_value_tokens(self.image_encoder, pixels), pixels)

    def patch_grid(self, tokens, pixels):
        """The last (rows x cols) tokens, one per patch of ``pixels``, as (B, rows, cols, D)."""
        return patch_grid(tokens, pixels, self.model.config.vision_config.patch_size)

    def image_head(self, features):
        return self.model.visual_projection(features)

    def text_features(self, input_ids, attention_mask):
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def text_head(self, features):
        return self.model.text_projection(features)

    def head_state_dict(self):
        return {
            "visual_projection.weight": self.model.visual_projection.weight,
            "text_projection.weight": self.model.text_projection.weight,
            "log_logit_scale": self.log_logit_scale,
        }

    @classmethod
    def source_files(cls, cfg: dict) -> list[Path]:
        p = Path(_local_or_hub(str(cfg.get("path") or "")))
        if not p.is_dir():
            raise ConfigError(f"cannot digest weights of hub id '{cfg.get('path')}': download it and pass the directory")
        return weight_files(p)

    def weights_digest(self) -> str:
        return files_digest(self.source_files({"path": self.source}))


@TOWERS.register("hf_siglip")
class HFSiglipTower(HFClipTower):
    """A SiglipModel: pooled outputs already pass its own heads; a learnable logit bias."""

    model_class = "SiglipModel"
    trim_padding = False  # SigLIP pools the last position, padding included, as it was trained

    def __init__(self, path: str | None = None, max_length: int | None = None, lora_targets: dict | None = None,
                 trust_remote_code: bool = False, revision: str | None = None):
        super().__init__(path, max_length, lora_targets, trust_remote_code, revision)
        self.logit_bias = nn.Parameter(self.model.logit_bias.detach().clone().reshape(()))

    def image_head(self, features):
        return features

    def text_head(self, features):
        return features

    def dense_features(self, pixels):
        """Per-patch embeddings for similarity maps. SigLIP pools its patches with an attention
        head (a learnt probe query, then a layer norm and MLP with a residual); MaskCLIP (Zhou, Loy
        and Dai, ECCV 2022) turns CLIP-ResNet's attention pooling into a dense head by keeping only
        its value and output projections. The same here: each patch goes through the head as if
        the probe attended to it alone (exactly ``head(patch)`` on a one-token sequence)."""
        vision = self.image_encoder
        tokens = vision(pixel_values=pixels).last_hidden_state  # after the post layer norm
        head = getattr(vision, "head", None)
        if head is not None:
            attn = head.attention
            dim = attn.embed_dim
            value = F.linear(tokens, attn.in_proj_weight[2 * dim:], attn.in_proj_bias[2 * dim:])
            pooled = attn.out_proj(value)
            tokens = pooled + head.mlp(head.layernorm(pooled))
        return self.patch_grid(tokens, pixels)

    def head_state_dict(self):
        return {"log_logit_scale": self.log_logit_scale, "logit_bias": self.logit_bias}
