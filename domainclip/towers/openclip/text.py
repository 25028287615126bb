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
    WeightMap,
    activation,
    count_blocks,
    linear_from,
    refuse,
    resblocks_to_clip,
)

log = logging.getLogger(__name__)

TEXT_DEFAULTS = {"ls_init_value": None, "no_causal_mask": False, "final_ln_after_pool": False, "act_kwargs": None,
                 "norm_kwargs": None, "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False,
                 "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}
POOLERS = ("mean_pooler", "cls_pooler", "cls_last_hidden_state_pooler")
BERT_LORA = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]


def build_text(cfg: dict, state: dict[str, torch.Tensor], quick_gelu: bool, hf_config=None) -> Part:
    """The text side of a checkpoint, by family (refused with the supported list otherwise)."""
    src = WeightMap(state, "text.")
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


def clip_text(cfg: dict, src: WeightMap, quick_gelu: bool) -> Part:
    """open_clip ``TextTransformer`` -> ``CLIPTextModel`` (causal; pooled at the end-of-text
    token). With ``embed_cls`` (CoCa), the class embedding becomes one extra vocabulary row that
    the tower appends after the tokens, and the pooled output is that last position."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokens = src["token_embedding.weight"]
    cls = src["cls_emb"] if "cls_emb" in src else None
    width, layers = tokens.shape[1], count_blocks(src.keys(), "transformer.resblocks.")
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
    name = "embeddings.token_embedding.weight"
    if cls is None:
        src.copy(name, "token_embedding.weight")
    else:  # the class embedding as one more vocabulary row (written back to cls_emb)
        src.fixed(name, torch.cat([tokens, cls[None]], 0))
        src.origins[name] = ("text.token_embedding.weight", ("last_row", "text.cls_emb"))
    src.copy("embeddings.position_embedding.weight", "positional_embedding")
    src.pair("final_layer_norm", "ln_final")
    resblocks_to_clip(src, layers)
    origins = src.load(net, "text transformer", "net.")
    if "text_projection.weight" in src:
        head, head_origins = linear_from(src, "text_projection.weight", "text_projection.bias", transposed=False,
                                         under="head.")
    else:
        head, head_origins = linear_from(src, "text_projection", under="head.")
    targets = ["q_proj", "k_proj", "v_proj", "out_proj"]
    if cls is None:
        return Part("clip", net, head, targets, {**origins, **head_origins})
    return Part("coca", net, head, targets, {**origins, **head_origins},
                options={"cls_id": tokens.shape[0], "pad_id": int(cfg.get("pad_id", 0))})


def hf_text(cfg: dict, src: WeightMap, hf_config=None) -> Part:
    """open_clip's ``HFTextEncoder``: a transformers text model, pooled (mean, CLS, or the model's
    pooler) over non-padding tokens, then ``proj`` (linear or MLP)."""
    from transformers import AutoModel

    pooler = cfg.get("hf_pooler_type", "mean_pooler")
    if pooler not in POOLERS:
        raise refuse(f"text_cfg.hf_pooler_type={pooler!r} (one of {list(POOLERS)} is)")
    with_pooler = pooler == "cls_pooler"
    body = WeightMap(src.state, src.prefix + "transformer.")
    for key in body.keys():
        if not key.endswith("position_ids") and (with_pooler or not key.startswith("pooler.")):
            body.copy(key, key)
    config = hf_config or infer_bert_config(body.tensors, cfg["hf_model_name"])
    net = AutoModel.from_config(config, add_pooling_layer=with_pooler)
    origins = body.load(net, f"text model {cfg['hf_model_name']!r}", "net.")
    head, head_origins = hf_projection(src, cfg.get("hf_proj_type", "mlp"))
    return Part("hf", net, head, hf_lora_targets(net), {**origins, **head_origins},
                options={"pooler": pooler, "pad_id": int(config.pad_token_id or 0)})


def hf_projection(src: WeightMap, kind: str) -> tuple[nn.Module, dict]:
    """open_clip's projection after a Hugging Face text model: linear, MLP (no biases) or none."""
    if kind == "linear":
        return linear_from(src, "proj.weight", transposed=False, under="head.")
    if kind == "mlp":
        fc1, o1 = linear_from(src, "proj.0.weight", transposed=False, under="head.0.")
        fc2, o2 = linear_from(src, "proj.2.weight", transposed=False, under="head.2.")
        return nn.Sequential(fc1, nn.GELU(), fc2), {**o1, **o2}
    if "proj.weight" in src or "proj.0.weight" in src:
        raise refuse(f"text_cfg.hf_proj_type={kind!r}")
    return nn.Identity(), {}


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
    return BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=count_blocks(list(body), "encoder.layer."),
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
