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


def test_in_place_activations_still_train():
    """ReLU6 and the residual sums run in place; training still backpropagates through every block
    (autograd's version counters raise if an in-place op overwrote a tensor backward needs) and the
    inference features equal the training graph's exactly."""
    torch.manual_seed(0)
    model = load_efficientnet_lite0().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        inference = model.forward_features(x)
    features = model.forward_features(x)
    assert torch.equal(inference, features.detach())
    features.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if not n.startswith("_fc"))


def test_lora_wrapped_convolutions_keep_their_adapter_at_inference():
    """peft's LoRA on the 1x1 convolutions: inference (no_grad) gives exactly the training-graph
    output, adapter included."""
    import peft

    torch.manual_seed(0)
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=4, target_modules=["_project_conv"]),
                                         load_efficientnet_lite0().eval())
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        adapted = model.forward_features(x)
        plain = load_efficientnet_lite0().eval().forward_features(x)
    assert torch.equal(adapted, model.forward_features(x).detach())
    assert (adapted - plain).abs().max() > 1e-2
