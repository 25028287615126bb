"""open_clip's own code as the oracle for the native open_clip loader, without torchvision.

open_clip and timm (installed with ``--no-deps`` by the test command) import torchvision only for
image transforms and a frozen batch-norm helper, which a forward pass never calls. ``install``
registers a stand-in for those imported names whose every class raises when constructed, so it
cannot stand in for anything a forward pass uses. Then each family is built with open_clip's
classes from a small config with random weights and saved in open_clip's format, and open_clip's
``create_model("local-dir:...")`` loads it back as the reference.
"""
from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import torch

STAND_IN = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.transforms.v2",
            "torchvision.transforms.v2.functional", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
            "torchvision.io", "torchvision.models", "torchvision.models.feature_extraction", "torchvision.utils"]
TIMM_TINY = "vit_dctest_patch8_32"


class InterpolationMode(enum.Enum):
    """torchvision's interpolation enum (timm builds lookup tables from it at import)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _StandIn(types.ModuleType):
    """A module whose every attribute is a class that refuses to be constructed."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(self, *args, **kwargs):
            raise RuntimeError(f"torchvision stand-in: {name} was used; the oracle must not depend on it")

        cls = type(name, (), {"__init__": refuse})
        setattr(self, name, cls)
        return cls


def install():
    """Import open_clip and timm with the stand-in (transformers is imported first, so that its
    own torchvision probe has already run and sees no torchvision), then remove the stand-in from
    ``sys.modules`` so that no later import finds a torchvision. Returns (open_clip, timm)."""
    import transformers  # noqa: F401 - probe torchvision before the stand-in exists

    if "open_clip" not in sys.modules:
        for name in STAND_IN:
            module = _StandIn(name)
            module.__path__ = []
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules[name] = module
        for name in STAND_IN[1:]:
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, sys.modules[name])
        sys.modules["torchvision"].__version__ = "0.0+stand-in"
        sys.modules["torchvision.transforms"].InterpolationMode = InterpolationMode
        sys.modules["torchvision.transforms.functional"].InterpolationMode = InterpolationMode
    try:
        import open_clip
        import timm
    finally:
        for name in STAND_IN:
            if isinstance(sys.modules.get(name), _StandIn):
                del sys.modules[name]
    register_tiny_timm_vit(timm)
    return open_clip, timm


def register_tiny_timm_vit(timm):
    """A 2-block, 128-wide timm ViT for 32-pixel images, registered under ``TIMM_TINY``."""
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if TIMM_TINY in timm.list_models(TIMM_TINY):
        return

    @register_model
    def vit_dctest_patch8_32(pretrained=False, **kwargs):
        keep = {k: kwargs[k] for k in ("num_classes", "global_pool", "drop_path_rate", "patch_drop_rate") if k in kwargs}
        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, mlp_ratio=2.0, **keep)
        model.pretrained_cfg = model.default_cfg = {"architecture": TIMM_TINY}  # what timm's builder sets
        return model


VIT = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}
CLIP_TEXT = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def family_configs(bert_dir: Path) -> dict[str, dict]:
    """open_clip model configs, one tiny model per supported family."""
    return {
        "clip": {"embed_dim": 16, "quick_gelu": True, "vision_cfg": dict(VIT), "text_cfg": dict(CLIP_TEXT)},
        "timm_hf": {"embed_dim": 16,
                    "vision_cfg": {"timm_model_name": TIMM_TINY, "timm_model_pretrained": False, "timm_pool": "",
                                   "timm_proj": "linear", "image_size": 32},
                    "text_cfg": {"hf_model_name": str(bert_dir), "hf_tokenizer_name": str(bert_dir),
                                 "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                                 "context_length": 24}},
        "coca": {"embed_dim": 16, "vision_cfg": {**VIT, "attentional_pool": True, "attn_pooler_heads": 2,
                                                 "attn_pooler_queries": 8, "output_tokens": True},
                 "text_cfg": {**CLIP_TEXT, "context_length": 23, "embed_cls": True, "output_tokens": True},
                 "multimodal_cfg": {"context_length": 23, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                                    "attn_pooler_heads": 2},
                 "custom_text": True},
    }


def save_tiny_bert(out: Path) -> Path:
    """A 2-layer, 128-wide BERT with the MiniLM (BERT uncased) tokenizer, standing in for PubMedBERT."""
    import transformers

    from domainclip.towers.two_tower import minilm_path

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=256, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def save_family(open_clip, family: str, model_cfg: dict, out: Path, safetensors: bool = False,
                logit_bias: float | None = None) -> Path:
    """Build ``family`` with open_clip's own classes (random weights, seeded) and save it as
    open_clip saves a checkpoint: ``open_clip_config.json`` + weights."""
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    torch.manual_seed(1)
    if logit_bias is not None:  # SigLIP-style bias, as open_clip configs declare it
        model_cfg = {**model_cfg, "init_logit_bias": logit_bias}
    cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    cls = CoCa if family == "coca" else CustomTextCLIP if family == "timm_hf" else CLIP
    model = cls(**cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a swapped tensor cannot go unnoticed
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_post.weight", "norm1.weight", "LayerNorm.weight")):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith(".bias") and p.abs().sum() == 0:
                p.add_(0.05 * torch.randn_like(p))
    out.mkdir(parents=True, exist_ok=True)
    pre = {"size": model_cfg["vision_cfg"]["image_size"], "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28],
           "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}))
    hf_text = model_cfg["text_cfg"].get("hf_tokenizer_name")
    if hf_text:  # open_clip's local-dir loading reads a Hugging Face tokenizer from the directory
        import transformers

        transformers.AutoTokenizer.from_pretrained(hf_text).save_pretrained(out)
    state = model.state_dict()
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "open_clip_model.safetensors"))
    else:
        torch.save(state, out / "open_clip_pytorch_model.bin")
    return out


def reference(open_clip, directory: Path):
    """open_clip's own model and tokenizer, loaded from the saved directory."""
    model = open_clip.create_model(f"local-dir:{directory}").eval()
    return model, open_clip.get_tokenizer(f"local-dir:{directory}")
