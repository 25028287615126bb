"""open_clip image towers as transformers modules: the OpenAI-style ``VisionTransformer`` as a
``CLIPVisionModel``, a timm ViT (BiomedCLIP) as a ``ViTModel``, and CoCa's ViT with its
attentional pooler (contrastive query only)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from domainclip.towers.openclip.blocks import (
    Part,
    WeightMap,
    activation,
    count_blocks,
    linear_from,
    refuse,
    resblocks_to_clip,
)

# vision_cfg options whose non-default values change the forward pass in ways not converted
VIT_DEFAULTS = {"ls_init_value": None, "no_ln_pre": False, "pos_embed_type": "learnable", "final_ln_after_pool": False,
                "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None, "qk_norm": False,
                "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                "scale_fc": False}
CLIP_LORA = ["q_proj", "k_proj", "v_proj", "out_proj"]
VIT_LORA = ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"]


def build_vision(cfg: dict, state: dict[str, torch.Tensor], quick_gelu: bool) -> Part:
    """The image side of a checkpoint, by family (refused with the supported list otherwise)."""
    if cfg.get("timm_model_name"):
        return timm_vit(cfg, WeightMap(state, "visual.trunk."), WeightMap(state, "visual."))
    if isinstance(cfg.get("layers"), (list, tuple)):
        raise refuse("a ModifiedResNet image tower (RN50-style)")
    for key, default in VIT_DEFAULTS.items():
        if cfg.get(key, default) not in (default, "default") and not (key == "pool_type" and cfg.get("attentional_pool")):
            raise refuse(f"vision_cfg.{key}={cfg[key]!r}")
    if cfg.get("block_type") not in (None, "default"):
        raise refuse(f"vision_cfg.block_type={cfg['block_type']!r}")
    attentional = cfg.get("attentional_pool", False)
    if attentional not in (False, True):
        raise refuse(f"vision_cfg.attentional_pool={attentional!r}")
    return clip_vit(cfg, WeightMap(state, "visual."), quick_gelu, coca=bool(attentional))


def clip_vit(cfg: dict, src: WeightMap, quick_gelu: bool, coca: bool = False) -> Part:
    """open_clip ``VisionTransformer`` -> ``CLIPVisionModel``; ``ln_post`` and ``proj`` become the
    post layer norm and the projection (CoCa: the attentional pooler, its ``ln_post``, ``proj``)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    width, patch = src["conv1.weight"].shape[0], src["conv1.weight"].shape[-1]
    layers = count_blocks(src.keys(), "transformer.resblocks.")
    grid = round((src["positional_embedding"].shape[0] - 1) ** 0.5)
    config = CLIPVisionConfig(hidden_size=width, num_hidden_layers=layers,
                              num_attention_heads=width // int(cfg.get("head_width", 64)),
                              intermediate_size=src["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                              image_size=grid * patch, patch_size=patch, hidden_act=activation(quick_gelu),
                              layer_norm_eps=1e-5)
    net = CLIPVisionModel(config)
    src.copy("embeddings.patch_embedding.weight", "conv1.weight")
    src.copy("embeddings.class_embedding", "class_embedding")
    src.copy("embeddings.position_embedding.weight", "positional_embedding")
    resblocks_to_clip(src, layers)
    src.pair("pre_layrnorm", "ln_pre")
    if coca:  # CoCa's ln_post follows the pooler (output width); the CLS post norm is unused
        src.fixed("post_layernorm.weight", torch.ones(width)), src.fixed("post_layernorm.bias", torch.zeros(width))
    else:
        src.pair("post_layernorm", "ln_post")
    origins = src.load(net, "image transformer", "net.")
    head, head_origins = linear_from(src, "proj", under="head.")
    if not coca:
        return Part("clip", net, head, list(CLIP_LORA), {**origins, **head_origins})
    pool, pool_origins = contrastive_pool(src, int(cfg.get("attn_pooler_heads", 8)))
    return Part("coca", net, head, list(CLIP_LORA), {**origins, **head_origins, **pool_origins}, pool=pool)


class ContrastivePool(nn.Module):
    """CoCa's attentional pooler reduced to its first query (the contrastive embedding; the other
    queries feed the captioning decoder, which domainclip does not load), then ``ln_post``.
    Queries do not interact in one attention layer, so the first query's output is unchanged."""

    def __init__(self, dim: int, context: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.attn = nn.MultiheadAttention(dim, heads, kdim=context, vdim=context, batch_first=True)
        self.ln_q, self.ln_k, self.ln_post = nn.LayerNorm(dim), nn.LayerNorm(context), nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = self.ln_k(tokens)
        query = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.ln_post(self.attn(query, keys, keys, need_weights=False)[0][:, 0])

    def per_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token pooled as if the query attended to it alone (MaskCLIP's dense attention pool:
        value and output projections only), for similarity maps."""
        attn, dim = self.attn, self.attn.embed_dim
        weight = attn.v_proj_weight if not attn._qkv_same_embed_dim else attn.in_proj_weight[2 * dim:]
        value = F.linear(self.ln_k(tokens), weight, attn.in_proj_bias[2 * dim:])
        return self.ln_post(attn.out_proj(value))


def contrastive_pool(src: WeightMap, heads: int) -> tuple[ContrastivePool, dict]:
    """CoCa's ``attn_pool`` weights in a ``ContrastivePool`` (first query only)."""
    pool = ContrastivePool(src["attn_pool.query"].shape[1], src["attn_pool.ln_k.weight"].shape[0], heads)
    wm = WeightMap(src.state, src.prefix)
    for key in src.keys():
        if key.startswith("attn_pool.attn."):
            wm.copy(key[len("attn_pool."):], key)
    wm.rows("query", "attn_pool.query", 0, 1)
    wm.pair("ln_q", "attn_pool.ln_q"), wm.pair("ln_k", "attn_pool.ln_k"), wm.pair("ln_post", "ln_post")
    return pool, wm.load(pool, "CoCa attentional pooler", "pool.")


def timm_vit(cfg: dict, trunk: WeightMap, visual: WeightMap) -> Part:
    """open_clip's ``TimmModel`` around a timm ViT (class token, pre-norm blocks, final norm) ->
    ``ViTModel``; its ``head.proj`` (or ``head.mlp``) is the projection."""
    from transformers import ViTConfig, ViTModel

    pool, proj = cfg.get("timm_pool", "avg"), cfg.get("timm_proj", "linear")
    if pool not in ("", "token") or proj not in ("linear", "mlp"):
        raise refuse(f"timm image tower with timm_pool={pool!r}, timm_proj={proj!r} (class-token pooling with a "
                     "linear or MLP projection is)")
    keys = trunk.keys()
    unknown = sorted({k for k in keys if not k.startswith(("cls_token", "pos_embed", "patch_embed.proj.", "blocks.", "norm."))})
    if unknown or "patch_embed.proj.weight" not in trunk:
        raise refuse(f"timm image tower {cfg['timm_model_name']!r} (weights {unknown[:3]}): a plain ViT")
    width, patch = trunk["patch_embed.proj.weight"].shape[0], trunk["patch_embed.proj.weight"].shape[-1]
    layers = count_blocks(keys, "blocks.")
    grid = round((trunk["pos_embed"].shape[1] - 1) ** 0.5)
    config = ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=timm_heads(cfg["timm_model_name"], width),
                       intermediate_size=trunk["blocks.0.mlp.fc1.weight"].shape[0], image_size=grid * patch,
                       patch_size=patch, qkv_bias="blocks.0.attn.qkv.bias" in trunk, layer_norm_eps=1e-6,
                       hidden_act="gelu")
    net = ViTModel(config, add_pooling_layer=False)
    trunk.copy("embeddings.cls_token", "cls_token"), trunk.copy("embeddings.position_embeddings", "pos_embed")
    trunk.pair("embeddings.patch_embeddings.projection", "patch_embed.proj"), trunk.pair("layernorm", "norm")
    for i in range(layers):
        s, d = f"blocks.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            trunk.thirds(f"{s}attn.qkv.{p}", tuple(f"{d}attention.{n}.{p}" for n in ("q_proj", "k_proj", "v_proj")))
        for a, b in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"), ("attn.proj", "attention.o_proj"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            trunk.pair(d + b, s + a)
    origins = trunk.load(net, "timm ViT", "net.")
    head, head_origins = timm_head(visual, proj)
    return Part("timm_vit", net, head, list(VIT_LORA), {**origins, **head_origins})


def timm_heads(name: str, width: int) -> int:
    """Attention heads of a timm ViT: timm's names fix them (ViT-H: 16 of 80), else 64-wide heads."""
    return 16 if "_huge_" in name else max(width // 64, 1)


def timm_head(visual: WeightMap, proj: str) -> tuple[nn.Module, dict]:
    """open_clip's projection after a timm trunk: ``head.proj`` (linear) or ``head.mlp`` (fc1, GELU, fc2)."""
    if proj == "linear":
        return linear_from(visual, "head.proj.weight", "head.proj.bias", transposed=False, under="head.")
    fc1, o1 = linear_from(visual, "head.mlp.fc1.weight", "head.mlp.fc1.bias", transposed=False, under="head.0.")
    fc2, o2 = linear_from(visual, "head.mlp.fc2.weight", "head.mlp.fc2.bias", transposed=False, under="head.2.")
    return nn.Sequential(fc1, nn.GELU(), fc2), {**o1, **o2}
