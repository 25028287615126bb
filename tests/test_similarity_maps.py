"""Similarity maps (the start of #22): per-location class scores from the adapted model, for the
EfficientNet default (its feature map) and transformers CLIP (MaskCLIP's value path)."""
from __future__ import annotations

import pytest
import torch

from domainclip.model import AdaptedModel

CLASSES = ["red", "green", "blue", "grey"]
PROMPTS = [t.format(c) for c in CLASSES for t in ("a photo of {}.", "a {} image.")]
LABELS = [k for k in range(len(CLASSES)) for _ in range(2)]


def build(tower: dict, method: dict) -> AdaptedModel:
    torch.manual_seed(0)
    return AdaptedModel.build(tower, method, CLASSES, PROMPTS, LABELS).eval()


def test_cnn_locations_average_to_the_image_embedding():
    model = build({"name": "two_tower", "image": {"size": 64}}, {"name": "zero_shot"})
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        local = model.tower.image_head(model.tower.dense_features(pixels))
        torch.testing.assert_close(local.mean(dim=(1, 2)), model.tower.encode_image(pixels), atol=1e-5, rtol=1e-5)
        maps = model.similarity_maps(pixels)
    assert maps.shape == (2, 4, 64, 64) and torch.isfinite(maps).all() and maps.abs().max() <= 1 + 1e-5


def test_cnn_padding_prompts_reach_the_maps():
    model = build({"name": "two_tower", "image": {"size": 64}}, {"name": "vpt", "pad": 8})
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model.similarity_maps(pixels)
        model.adapters["visual_prompts"].tokens.fill_(3.0)
        after = model.similarity_maps(pixels)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("method", [{"name": "zero_shot"}, {"name": "lora", "sides": ["image"]},
                                    {"name": "vpt"}, {"name": "cocoop"}])
def test_clip_maps_use_the_adapted_weights(tiny_clip_dir, method):
    model = build({"name": "hf_clip", "path": str(tiny_clip_dir)}, method)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        maps = model.similarity_maps(pixels)
        again = model.similarity_maps(pixels)
        zero = model.similarity_maps(pixels, zero_shot=True)
    assert maps.shape == (2, 4, 32, 32) and torch.equal(maps, again)  # deterministic
    if method["name"] == "lora":  # peft starts as the identity, then its weights move the maps
        torch.testing.assert_close(maps, zero)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name and "v_proj" in name:
                    p.normal_(0, 0.5)
            moved = model.similarity_maps(pixels)
        assert not torch.allclose(moved, zero, atol=1e-4)


def test_clip_value_path_is_the_maskclip_formula(tiny_clip_dir):
    """Independently recomputed from the hidden states transformers returns."""
    model = build({"name": "hf_clip", "path": str(tiny_clip_dir)}, {"name": "zero_shot"})
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    vision = model.tower.model.vision_model
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        last = vision.encoder.layers[-1]
        expected = vision.post_layernorm(last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(hidden))))
        got = model.tower.dense_features(pixels)
    torch.testing.assert_close(got, expected[:, 1:].reshape(1, 4, 4, -1))


def test_linear_probe_maps_are_its_logits_per_location():
    from domainclip.methods.linear_probe import Probe

    model = build({"name": "two_tower", "image": {"size": 64}}, {"name": "linear_probe"})
    probe: Probe = model.adapters["probe"]
    probe.set(torch.randn(4, 1280, generator=torch.Generator().manual_seed(5)), torch.zeros(4))
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        feats = model.tower.dense_features(pixels)
        maps = model.similarity_maps(pixels)
    assert maps.shape == (1, 4, 64, 64)
    coarse = torch.nn.functional.interpolate(probe(feats).permute(0, 3, 1, 2), size=(64, 64), mode="bilinear",
                                             align_corners=False)
    torch.testing.assert_close(maps, coarse)


def _fitted_probe(model):
    model.adapters["probe"].set(torch.randn(4, 1280, generator=torch.Generator().manual_seed(9)), torch.randn(4))
    return model


@pytest.mark.parametrize("case", ["effnet_zero_shot", "effnet_lora", "effnet_probe", "effnet_mil", "siglip_bias"])
def test_a_location_is_scored_as_an_image_made_of_its_features(case, tiny_siglip_dir):
    """``location_logits`` at each cell equal the method's ``logits`` of a batch whose cached
    features are that cell's (scale, SigLIP's bias and the probe included), and the probability
    maps are those logits' softmax at each cell, upsampled: a permutation slip would break both."""
    tower = {"name": "hf_siglip", "path": str(tiny_siglip_dir)} if case == "siglip_bias" else \
        {"name": "two_tower", "image": {"size": 64}}
    method = {"effnet_lora": {"name": "lora"}, "effnet_probe": {"name": "linear_probe"},
              "effnet_mil": {"name": "mil", "pool": "abmil"}}.get(case, {"name": "zero_shot"})
    model = build(tower, method)
    if case == "effnet_probe":
        _fitted_probe(model)
    if case == "effnet_mil":  # class rows of unequal norm: the classifier, not a cosine, scores a tile
        model.adapters["classifier"].weight.data.mul_(torch.tensor([0.5, 1.0, 2.0, 3.0])[:, None])
    if case == "siglip_bias":
        model.tower.logit_bias.data.fill_(-2.5)  # the tiny tower's bias is 0: give it one to carry
    size = model.tower.preprocess.size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        grid = model.location_logits(pixels)
        feats = model.tower.dense_features(pixels)
        b, h, w, _ = feats.shape
        cells = feats.reshape(b * h * w, -1)
        batch = {"features": cells[:, None], "tile_mask": torch.ones(len(cells), 1, dtype=torch.bool)} \
            if case == "effnet_mil" else {"features": cells}  # MIL: each cell a slide of one tile
        expected = model.logits(batch).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        probs = model.probability_maps(pixels)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-5)
    assert grid.shape == (2, 4, h, w) and (h, w) != (1, 1)
    upsampled = torch.nn.functional.interpolate(expected.softmax(1), size=(size, size), mode="bilinear",
                                                align_corners=False)
    torch.testing.assert_close(probs, upsampled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, size, size))


def test_siglip_patch_embeddings_are_its_own_pooling_head_on_each_patch(tiny_siglip_dir):
    """The oracle is transformers' SiglipMultiheadAttentionPoolingHead itself: on a one-token
    sequence its attention can only attend to that token, so head(patch) is the value path."""
    model = build({"name": "hf_siglip", "path": str(tiny_siglip_dir)}, {"name": "zero_shot"})
    vision = model.tower.image_encoder
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = model.tower.dense_features(pixels)  # (2, 4, 4, D)
        tokens = vision(pixel_values=pixels).last_hidden_state
        expected = torch.stack([vision.head(tokens[:, i : i + 1]) for i in range(tokens.shape[1])], dim=1)
        maps = model.similarity_maps(pixels)
    torch.testing.assert_close(dense.reshape(2, 16, -1), expected, rtol=1e-5, atol=1e-5)
    assert maps.shape == (2, 4, 32, 32) and torch.isfinite(maps).all()
    assert not torch.allclose(maps[0], maps[1])


def test_overlay_background_is_the_input_as_read():
    """Undoing the tower's normalisation gives back the reader's 0..1 image exactly."""
    import numpy as np

    from domainclip.evaluation.overlays import display_image
    from domainclip.transforms.pipeline import Preprocess, to_tensor

    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
    pre = Preprocess(size=16, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    shown = display_image(to_tensor(arr, pre), pre.mean, pre.std)
    np.testing.assert_allclose(shown, arr.transpose(1, 2, 0), atol=1e-6)
    grey = display_image(torch.zeros(1, 4, 4), (0.5,), (0.5,))
    assert grey.shape == (4, 4, 3) and np.allclose(grey, 0.5)


def test_pointing_hits_match_a_plain_argmax():
    import numpy as np

    from domainclip.evaluation.pointing import pointing_hits

    rng = np.random.default_rng(1)
    maps, masks = rng.normal(size=(50, 12, 12)), rng.random((50, 6, 6)) < 0.4
    expected = []
    for m, k in zip(maps, masks):
        y, x = np.unravel_index(m.argmax(), m.shape)
        expected.append(bool(k[y // 2, x // 2]))  # the 6x6 mask seen at 12x12 (nearest)
    got = pointing_hits(torch.from_numpy(maps), torch.from_numpy(masks))
    assert got.tolist() == expected and 0 < sum(expected) < 50


def test_pointing_tolerance_counts_a_peak_near_the_mask():
    from domainclip.evaluation.pointing import pointing_hits

    maps = torch.zeros(1, 40, 40)
    maps[0, 20, 30] = 1.0  # the peak, 10 pixels right of the mask's edge at column 20
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, 15:25, 10:21] = True
    assert pointing_hits(maps, mask).tolist() == [False]
    assert pointing_hits(maps, mask, tolerance=9).tolist() == [False]
    assert pointing_hits(maps, mask, tolerance=10).tolist() == [True]


@pytest.mark.parametrize("family", ["clip", "timm_hf", "coca"])
def test_open_clip_families_give_maps(family, open_clip_dirs):
    model = build({"name": "open_clip", "path": str(open_clip_dirs[family])}, {"name": "zero_shot"})
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        maps = model.similarity_maps(pixels)
    assert maps.shape == (2, 4, 32, 32) and torch.isfinite(maps).all() and torch.equal(maps, model.similarity_maps(pixels))
    assert not torch.allclose(maps[0], maps[1]) and maps[0, 0].std() > 0


def test_coca_patch_embeddings_are_open_clips_pooler_on_each_patch(open_clip_oracle, open_clip_dirs):
    """The oracle is open_clip's own AttentionalPooler and ln_post: with one token to attend to,
    the contrastive query's output is that token's value path."""
    ref = open_clip_oracle.create_model(f"local-dir:{open_clip_dirs['coca']}").eval()
    model = build({"name": "open_clip", "path": str(open_clip_dirs["coca"])}, {"name": "zero_shot"})
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        tokens = model.tower.image_encoder(pixel_values=pixels).last_hidden_state
        expected = torch.stack([ref.visual.ln_post(ref.visual.attn_pool(tokens[:, i : i + 1]))[:, 0]
                                for i in range(1, tokens.shape[1])], dim=1)
        got = model.tower.dense_features(pixels)
    torch.testing.assert_close(got.reshape(1, 16, -1), expected, atol=1e-5, rtol=1e-5)


def test_a_coarse_maps_peaks_lie_where_grid_peak_pixels_says():
    """Random 7 x 7 maps upsampled as similarity_maps does (bilinear to 224 px) peak only on the
    pixels ``grid_peak_pixels`` allows, so no map can beat ``pointing_upper_bound``."""
    import torch.nn.functional as F

    from domainclip.evaluation.pointing import grid_peak_pixels, pointing_hits, pointing_upper_bound

    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(3000, 1, 7, 7, generator=gen) ** 8  # peaky, often tied near zero
    maps = F.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    allowed = grid_peak_pixels((7, 7), (224, 224))
    peaks = maps.flatten(1).argmax(1)
    assert allowed.flatten()[peaks].all()
    assert allowed.float().mean() < 0.1  # most pixels are out of reach
    masks = torch.zeros(6, 224, 224, dtype=torch.bool)
    masks[0, 10:20, 10:20] = True     # the first cell's centre (15.5, 15.5): reachable
    masks[1, 40:44, 40:44] = True     # between centres 47.5 and 15.5: no map can peak here
    masks[2:, 100:130, 100:130] = True  # holds the centre cell's peak
    assert pointing_upper_bound((7, 7), masks, (224, 224)) == pytest.approx(5 / 6)
    rate = pointing_hits(maps[:6], masks).float().mean().item()
    assert rate <= pointing_upper_bound((7, 7), masks, (224, 224))
    # its corner (43, 43) is sqrt(32) = 5.7 px from the reachable pixel (47, 47)
    assert pointing_upper_bound((7, 7), masks[1:2], (224, 224), tolerance=5) == 0.0
    assert pointing_upper_bound((7, 7), masks[1:2], (224, 224), tolerance=6) == 1.0
