"""open_clip text towers as transformers modules: the OpenAI-style ``TextTransformer`` as a
``CLIPTextModel``, CoCa's text transformer (a class embedding appended after the tokens) as a
``CLIPTextModel`` with one extra token, and Hugging Face text towers (BiomedCLIP's PubMedBERT)
with open_clip's pooling and projection."""
from __future__ import annotations

import logging

import torch
from torch import nn

from domainclip.towers.openclip.blocks import (
    Part,
    activation,
    count_blocks,
    linear_from,
    load_exactly,
    refuse,
    resblocks_to_clip,
    take,
)

log = logging.getLogger(__name__)

TEXT_DEFAULTS = {"ls_init_value": None, "no_causal_mask": False, "final_ln_after_pool": False, "act_kwargs": None,
                 "norm_kwargs": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                 "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}
POOLERS = ("mean_pooler", "cls_pooler", "cls_last_hidden_state_pooler")
BERT_LORA = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]


def build_text(cfg: dict, state: dict[str, torch.Tensor], quick_gelu: bool, hf_config=None) -> Part:
    """The text side of a checkpoint, by family (refused with the supported list otherwise)."""
    src = take(state, "text.")
    if cfg.get("hf_model_name"):
        return hf_text(cfg, src, hf_config)
    for key, default in TEXT_DEFAULTS.items():
        if cfg.get(key, default) != default:
            raise refuse(f"text_cfg.{key}={cfg[key]!r}")
    if cfg.get("block_type") not in (None, "default"):
        raise refuse(f"text_cfg.block_type={cfg['block_type']!r}")
    pool = cfg.get("pool_type", "argmax")
    if "cls_emb" not in src and pool not in ("argmax", "eos"):
        raise refuse(f"text_cfg.pool_type={pool!r} (argmax and eos pooling are)")
    return clip_text(cfg, src, quick_gelu)


def clip_text(cfg: dict, src: dict[str, torch.Tensor], quick_gelu: bool) -> Part:
    """open_clip ``TextTransformer`` -> ``CLIPTextModel`` (causal; pooled at the end-of-text
    token). With ``embed_cls`` (CoCa), the class embedding becomes one extra vocabulary row that
    the tower appends after the tokens, and the pooled output is that last position."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokens = src["token_embedding.weight"]
    cls = src.get("cls_emb")
    width, layers = tokens.shape[1], count_blocks(src, "transformer.resblocks.")
    pool = cfg.get("pool_type", "argmax")
    eos = 2 if pool == "argmax" else int(cfg.get("eos_id", 2))  # transformers pools by argmax when eos id is 2
    if pool == "eos" and eos == 2:
        raise refuse("text_cfg.pool_type='eos' with eos_id=2 (ambiguous with argmax pooling in transformers)")
    config = CLIPTextConfig(vocab_size=tokens.shape[0] + (cls is not None), hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=int(cfg.get("heads", 8)),
                            intermediate_size=src["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                            max_position_embeddings=src["positional_embedding"].shape[0],
                            hidden_act=activation(quick_gelu), layer_norm_eps=1e-5, eos_token_id=eos)
    net = CLIPTextModel(config)
    embedding = tokens if cls is None else torch.cat([tokens, cls[None]], 0)
    mapped = {"embeddings.token_embedding.weight": embedding,
              "embeddings.position_embedding.weight": src["positional_embedding"],
              "final_layer_norm.weight": src["ln_final.weight"], "final_layer_norm.bias": src["ln_final.bias"],
              **resblocks_to_clip(src, layers)}
    load_exactly(net, mapped, "text transformer")
    proj = src["text_projection.weight"].T if "text_projection.weight" in src else src["text_projection"]
    head = linear_from(proj, src.get("text_projection.bias"))
    targets = ["q_proj", "k_proj", "v_proj", "out_proj"]
    if cls is None:
        return Part("clip", net, head, targets)
    return Part("coca", net, head, targets, options={"cls_id": tokens.shape[0], "pad_id": int(cfg.get("pad_id", 0))})


def hf_text(cfg: dict, src: dict[str, torch.Tensor], hf_config=None) -> Part:
    """open_clip's ``HFTextEncoder``: a transformers text model, pooled (mean, CLS, or the model's
    pooler) over non-padding tokens, then ``proj`` (linear or MLP)."""
    from transformers import AutoModel

    pooler = cfg.get("hf_pooler_type", "mean_pooler")
    if pooler not in POOLERS:
        raise refuse(f"text_cfg.hf_pooler_type={pooler!r} (one of {list(POOLERS)} is)")
    body = {k: v for k, v in take(src, "transformer.").items() if not k.endswith("position_ids")}
    config = hf_config or infer_bert_config(body, cfg["hf_model_name"])
    with_pooler = pooler == "cls_pooler"
    net = AutoModel.from_config(config, add_pooling_layer=with_pooler)
    if not with_pooler:
        body = {k: v for k, v in body.items() if not k.startswith("pooler.")}
    load_exactly(net, body, f"text model {cfg['hf_model_name']!r}")
    return Part("hf", net, hf_projection(src, cfg.get("hf_proj_type", "mlp")), hf_lora_targets(net),
                options={"pooler": pooler, "pad_id": int(config.pad_token_id or 0)})


def hf_projection(src: dict[str, torch.Tensor], kind: str) -> nn.Module:
    """open_clip's projection after a Hugging Face text model: linear, MLP (no biases) or none."""
    if kind == "linear":
        return linear_from(src["proj.weight"].T)
    if kind == "mlp":
        return nn.Sequential(linear_from(src["proj.0.weight"].T), nn.GELU(), linear_from(src["proj.2.weight"].T))
    if "proj.weight" in src or "proj.0.weight" in src:
        raise refuse(f"text_cfg.hf_proj_type={kind!r}")
    return nn.Identity()


def hf_lora_targets(net: nn.Module) -> list[str]:
    """q, k, v and attention-output names of a BERT-family model (others: every attention linear)."""
    names = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    if any(n.endswith("attention.self.query") for n in names):
        return list(BERT_LORA)
    return sorted({n.rsplit(".", 1)[-1] for n in names if "attn" in n or "attention" in n})


def infer_bert_config(body: dict[str, torch.Tensor], name: str):
    """A ``BertConfig`` read off a BERT-family checkpoint when the model's hub config is not cached
    (heads: 64 wide, as in every BERT size; layer norm eps 1e-12 and GELU, BERT's defaults)."""
    from transformers import BertConfig

    if "embeddings.word_embeddings.weight" not in body or "encoder.layer.0.attention.self.query.weight" not in body:
        raise refuse(f"text model {name!r} whose config is not in the hub cache and is not BERT-shaped "
                     f"(download its config once: huggingface-cli download {name} config.json)")
    vocab, width = body["embeddings.word_embeddings.weight"].shape
    log.info("text model %s: config not cached; inferred a BERT config from the weights", name)
    return BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=count_blocks(body, "encoder.layer."),
                      num_attention_heads=max(width // 64, 1),
                      intermediate_size=body["encoder.layer.0.intermediate.dense.weight"].shape[0],
                      max_position_embeddings=body["embeddings.position_embeddings.weight"].shape[0],
                      type_vocab_size=body["embeddings.token_type_embeddings.weight"].shape[0])


def hf_pooled(net: nn.Module, input_ids: torch.Tensor, pooler: str, pad_id: int) -> torch.Tensor:
    """open_clip's pooling of a Hugging Face text model's output (attending to non-padding tokens)."""
    attention_mask = (input_ids != pad_id).long()
    out = net(input_ids=input_ids, attention_mask=attention_mask)
    if pooler == "cls_pooler":
        return out.pooler_output
    if pooler == "cls_last_hidden_state_pooler":
        return out.last_hidden_state[:, 0]
    mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
    return (out.last_hidden_state * mask).sum(1) / mask.sum(1)


def coca_pooled(net: nn.Module, input_ids: torch.Tensor, cls_id: int, pad_id: int) -> torch.Tensor:
    """CoCa's text embedding: the class token appended after the tokens, read at the last position
    after the final norm. open_clip's key mask is kept as it ships (``correct_cls_mask=False``:
    shifted by one position), so the embeddings equal the released model's."""
    ids = torch.cat([input_ids, torch.full_like(input_ids[:, :1], cls_id)], 1)
    valid = (input_ids != pad_id).long()
    mask = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
    return net(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
