"""Losses match the CLIP and SigLIP formulas on hand-computed cases."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from domainclip.training.losses import clip_loss, label_aware_loss, siglip_loss


def _feats(seed=0, n=4, d=8):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_clip_loss_two_by_two_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    logits = s * img @ txt.t()  # [[2, 1.2], [0, 1.6]]
    row = lambda r, i: -math.log(math.exp(r[i]) / sum(math.exp(v) for v in r))  # noqa: E731
    i2t = (row([2.0, 1.2], 0) + row([0.0, 1.6], 1)) / 2
    t2i = (row([2.0, 0.0], 0) + row([1.2, 1.6], 1)) / 2
    assert torch.isclose(clip_loss(img, txt, torch.tensor(s)), torch.tensor((i2t + t2i) / 2), atol=1e-6)
    assert logits[0, 1] == 1.2


def test_siglip_loss_matches_paper_formula():
    img, txt = _feats()
    t, b = torch.tensor(10.0), torch.tensor(-10.0)
    n = img.shape[0]
    expected = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            expected += -math.log(1 / (1 + math.exp(-z * (t * img[i] @ txt[j] + b))))
    assert torch.isclose(siglip_loss(img, txt, t, logit_bias=b), torch.tensor(expected / n), atol=1e-5)


def test_label_aware_equals_clip_when_labels_differ():
    img, txt = _feats(1)
    s = torch.tensor(14.0)
    assert torch.isclose(label_aware_loss(img, txt, s, labels=torch.arange(4)), clip_loss(img, txt, s), atol=1e-6)


def test_label_aware_does_not_push_apart_same_label_pairs():
    # img_i = e_i, so logits[i, j] = s * txt[j, i]; txt[1, 0] is the similarity of image 0 and text 1.
    img = torch.eye(3)
    s = torch.tensor(10.0)
    grads = {}
    for name, fn in (("clip", clip_loss), ("label_aware", label_aware_loss)):
        txt = torch.eye(3, requires_grad=True)
        fn(img, txt, s, labels=torch.tensor([0, 0, 1])).backward()
        grads[name] = txt.grad[1, 0].item()
    assert grads["clip"] > 0  # CLIP treats the same-class caption as a negative
    assert grads["label_aware"] < 0  # label-aware pulls it closer instead
