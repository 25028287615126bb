"""Towers load through one code path; LoRA trains only what it should and starts as identity."""
from __future__ import annotations

import re

import pytest
import torch

from domainclip.methods import build_method
from domainclip.methods.lora import target_regex
from domainclip.model import AdaptedModel
from domainclip.towers import build_tower

EMBEDDED = {"name": "two_tower"}


@pytest.fixture(scope="module")
def embedded():
    return build_tower(EMBEDDED)


def tiny(tiny_clip_dir):
    return build_tower({"name": "hf_clip", "path": str(tiny_clip_dir)})


def test_embedded_tower_contract(embedded):
    tok = embedded.tokenize(["an H&E image of tumour.", "stroma"])
    txt = embedded.encode_text(**tok)
    img = embedded.encode_image(torch.randn(2, 3, 96, 96))
    assert txt.shape == img.shape == (2, 256)
    assert embedded.preprocess.size == 224 and len(embedded.weights_digest()) == 64
    assert torch.isclose(embedded.logit_scale, torch.tensor(1 / 0.07), rtol=1e-4)


def test_minilm_mean_pooling_matches_sentence_embedding(embedded):
    # all-MiniLM-L6-v2 sentence embeddings of paraphrases are closer than of unrelated text
    tok = embedded.tokenize(["a cat sits on the mat", "a kitten is sitting on a rug", "stock markets fell today"])
    f = torch.nn.functional.normalize(embedded.text_features(**tok), dim=-1)
    assert f[0] @ f[1] > f[0] @ f[2] + 0.3


def test_tiny_clip_loads_from_a_local_dir(tiny_clip_dir):
    t = tiny(tiny_clip_dir)
    tok = t.tokenize(["a photo", "an x-ray of a chest"])
    assert t.encode_text(**tok).shape == (2, 16)
    assert t.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    assert t.preprocess.size == 32


def test_hf_clip_needs_a_path():
    from domainclip.core.errors import ConfigError

    with pytest.raises(ConfigError, match="tower.path is required"):
        build_tower({"name": "hf_clip", "path": None})


def adapted(tower, method) -> AdaptedModel:
    """The tower adapted by ``method`` for two classes, through the one model builder."""
    spec = {"tower": {}, "method": {}, "classes": ["a", "b"], "prompts": ["a", "b"], "prompt_labels": [0, 1]}
    return AdaptedModel(tower, method, spec)


@pytest.mark.parametrize("which", ["embedded", "tiny", "siglip"])
def test_declared_lora_targets_match_modules(which, embedded, tiny_clip_dir, tiny_siglip_dir):
    tower = {"embedded": lambda: embedded, "tiny": lambda: tiny(tiny_clip_dir),
             "siglip": lambda: build_tower({"name": "hf_siglip", "path": str(tiny_siglip_dir)})}[which]()
    for side, names in tower.lora_targets.items():
        base, prefixes = tower.lora_scope([side])
        pattern = re.compile(target_regex({side: prefixes[side]}, {side: names}))
        for name in names:
            assert any(pattern.fullmatch(n) and n.endswith(name) for n, _ in base.named_modules()), (side, name)


@pytest.mark.parametrize("sides", [["text"], ["image"], ["image", "text"]])
def test_lora_trains_only_adapters_and_heads_and_starts_as_identity(tiny_clip_dir, sides):
    tower = tiny(tiny_clip_dir).eval()
    tok = tower.tokenize(["a chest x-ray", "a ct slice"])
    pix = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = tower.encode_text(**tok), tower.encode_image(pix)
    method = build_method({"name": "lora", "sides": sides, "r": 4, "train_heads": True})
    adapted(tower, method)
    trainable = [n for n, p in tower.named_parameters() if p.requires_grad]
    heads = {"model.visual_projection.weight", "model.text_projection.weight", "log_logit_scale"}
    assert set(trainable) - heads and all("lora_" in n or n in heads for n in trainable)
    side_of = {"image": "vision_model", "text": "text_model"}
    assert all(any(side_of[s] in n for s in sides) for n in trainable if "lora_" in n)
    with torch.no_grad():
        after = tower.encode_text(**tok), tower.encode_image(pix)
    torch.testing.assert_close(before[0], after[0])
    torch.testing.assert_close(before[1], after[1])


def test_zero_shot_method_trains_nothing(embedded):
    method = build_method({"name": "zero_shot"})
    adapted(embedded, method)
    assert not any(p.requires_grad for p in embedded.parameters()) and not method.trains


def test_frozen_batchnorm_stays_in_eval_mode():
    tower = build_tower(EMBEDDED)
    adapted(tower, build_method({"name": "lora", "sides": ["text"]}))
    tower.train()
    bns = [m for m in tower.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
