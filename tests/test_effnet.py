"""The EfficientNet-Lite0 module loads the packaged ImageNet weights and really works."""
from __future__ import annotations

import numpy as np
import torch

from domainclip.towers.effnet_lite import (
    LITE_MEAN,
    LITE_STD,
    Conv2dSame,
    load_efficientnet_lite0,
    packaged_weights_path,
)
from domainclip.transforms.pipeline import Preprocess, to_tensor


def test_state_dict_loads_strictly():
    model = load_efficientnet_lite0()
    state = torch.load(packaged_weights_path(), weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert model._bn0.eps == 1e-3


def test_cat_photo_top5_is_a_cat():
    from skimage.data import chelsea

    model = load_efficientnet_lite0()
    x = to_tensor(chelsea().transpose(2, 0, 1).astype(np.float32) / 255.0, Preprocess(224, LITE_MEAN, LITE_STD))
    with torch.no_grad():
        top5 = model(x[None]).topk(5).indices[0].tolist()
    assert {281, 282, 285} & set(top5), top5


def test_pooled_features_are_1280d_for_any_size():
    model = load_efficientnet_lite0()
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 97, 130)).shape == (2, 1280)


def test_same_padding_matches_tensorflow_output_size():
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    for size in (7, 8, 224, 225):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_stride_one_same_padding_equals_explicit_tensorflow_padding():
    torch.manual_seed(0)
    for kernel in (3, 5):
        conv = Conv2dSame(4, 4, kernel, stride=1, groups=4, bias=False)
        x = torch.randn(2, 4, 17, 20)
        pad = (kernel - 1) // 2
        explicit = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad, pad, pad, pad)), conv.weight, groups=4)
        torch.testing.assert_close(conv(x), explicit)
        torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last)), explicit, rtol=1e-5, atol=1e-5)
