"""open_clip models (BiomedCLIP, CONCH, UniMed-CLIP...) from a local directory. Optional extra:
``pip install 'domainclip[open_clip]'`` (open_clip needs torchvision, which has no CPU build for
torch 2.13 here, so it is never a hard dependency)."""
from __future__ import annotations

from pathlib import Path

from domainclip.core.errors import ConfigError
from domainclip.towers.base import TOWERS, Tower, files_digest, weight_files
from domainclip.transforms.pipeline import Preprocess


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError("tower=open_clip needs the optional extra: pip install 'domainclip[open_clip]'") from exc
    return open_clip


@TOWERS.register("open_clip")
class OpenClipTower(Tower):
    """An open_clip CLIP model loaded with ``local-dir:PATH`` (open_clip_config.json + weights)."""

    def __init__(self, path: str | None = None, max_length: int = 77):
        open_clip = _open_clip()
        if not path or not Path(path).is_dir():
            raise ConfigError("tower.path must be a local directory holding open_clip_config.json and weights")
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
        super().__init__(float(model.logit_scale.detach()))
        self.path, self.model = Path(path), model
        self.image_encoder, self.text_encoder = model.visual, model.transformer if hasattr(model, "transformer") else model.text
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        self.max_text_length = max_length
        cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
        size = cfg.get("size", 224)
        self.preprocess = Preprocess(size=size if isinstance(size, int) else size[0], mean=tuple(cfg.get("mean", (0.5,) * 3)),
                                     std=tuple(cfg.get("std", (0.5,) * 3)))
        self.lora_targets = {"image": ["qkv", "out_proj"], "text": ["out_proj"]}

    def enable_activation_checkpointing(self) -> None:
        """open_clip's own gradient checkpointing of its residual attention blocks."""
        self.model.set_grad_checkpointing(True)

    def tokenize(self, texts):
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def backbone_features(self, pixels):
        return self.model.encode_image(pixels)

    def image_head(self, features):
        return features

    def text_features(self, input_ids, attention_mask):
        return self.model.encode_text(input_ids)

    def text_head(self, features):
        return features

    def lora_scope(self, sides):
        return self.model, {"image": "visual.", "text": ""}

    def head_state_dict(self):
        return {"log_logit_scale": self.log_logit_scale}

    @classmethod
    def source_files(cls, cfg: dict) -> list[Path]:
        path = Path(str(cfg.get("path") or ""))
        return weight_files(path) or sorted(path.glob("*.pt"))

    def weights_digest(self) -> str:
        return files_digest(self.source_files({"path": self.path}))


