"""The native open_clip loader against open_clip's own code (the oracle, see openclip_oracle.py):
each family's embeddings, temperature, bias and token ids equal open_clip's; checkpoints are found
by directory, hub cache or model name; what is not supported is refused in one line."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from domainclip.core.errors import ConfigError
from domainclip.towers import build_tower

SENTENCES = [
    "H&E stained section showing invasive ductal carcinoma.",
    "Lymph node with metastatic adenocarcinoma &amp; extranodal extension (pT2 N1a).",
    "CT, lung window: a 12 mm spiculated nodule in the right upper lobe; follow-up ≥ 3 months.",
    "Sentinel node: isolated tumour cells, 0.2 µm… no macrometastasis!",
    "  Whitespace\tand\nnewlines   collapse.  ",
    "Crohn’s disease with “skip lesions”; ﬁbrosis on ＣＴ, Crohnâ€™s again.",  # word-processor text

    " ".join(["diffuse large B-cell lymphoma with high-grade features"] * 12),  # longer than the context
]
FAMILIES = ["clip", "timm_hf", "coca"]


def _pair(open_clip, directory):
    ref = open_clip.create_model(f"local-dir:{directory}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{directory}")
    return ref, tok, build_tower({"name": "open_clip", "path": str(directory)}).eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_embeddings_scale_bias_and_token_ids_equal_open_clip(family, open_clip_oracle, open_clip_dirs):
    ref, ref_tok, tower = _pair(open_clip_oracle, open_clip_dirs[family])
    ids = ref_tok(SENTENCES)
    mine = tower.tokenize(SENTENCES)
    assert torch.equal(mine["input_ids"], ids)  # truncation keeps the end token, padding is open_clip's
    assert (ids[-1] != ids[0]).any() and int(mine["attention_mask"][-1].sum()) == ids.shape[1]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_image(pixels), ref.encode_image(pixels, normalize=False),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(tower.encode_text(**mine), ref.encode_text(ids, normalize=False), atol=1e-4, rtol=0)
    assert tower.log_logit_scale.item() == ref.logit_scale.item()
    if ref.logit_bias is None:
        assert tower.logit_bias is None
    else:
        assert tower.logit_bias.item() == ref.logit_bias.item() == -2.0
    # what is compared is not degenerate: distinct images and texts embed apart
    emb = tower.encode_image(pixels).detach()
    assert (emb[0] - emb[1]).abs().max() > 1e-3


def test_preprocessing_comes_from_the_checkpoint_config(open_clip_dirs):
    tower = build_tower({"name": "open_clip", "path": str(open_clip_dirs["timm_hf"])})
    pre = tower.preprocess
    assert (pre.size, pre.mean, pre.std, pre.resize_mode, pre.interpolation) == (
        32, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), "shortest", "bicubic")


def test_a_weight_file_with_a_model_name_infers_the_architecture(open_clip_oracle, tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(3)
    ref = CLIP(embed_dim=16, quick_gelu=True, vision_cfg={"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
               text_cfg={"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}).eval()
    torch.save(ref.state_dict(), tmp_path / "RemoteCLIP-ViT-T.pt")
    tower = build_tower({"name": "open_clip", "path": str(tmp_path / "RemoteCLIP-ViT-T.pt"),
                         "model": "ViT-T-16-quickgelu"}).eval()
    assert tower.image_encoder.config.hidden_act == "quick_gelu"
    pixels = torch.randn(2, 3, 32, 32)
    tok = tower.tokenize(SENTENCES[:2])
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_image(pixels), ref.encode_image(pixels), atol=1e-4, rtol=0)
        torch.testing.assert_close(tower.encode_text(**tok), ref.encode_text(tok["input_ids"]), atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="set tower.model"):
        build_tower({"name": "open_clip", "path": str(tmp_path / "RemoteCLIP-ViT-T.pt")})


def test_a_hub_cache_snapshot_loads_offline(open_clip_dirs, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    snapshot = tmp_path / "hub" / "models--lab--QuiltNet-tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(open_clip_dirs["clip"], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = build_tower({"name": "open_clip", "path": "hf-hub:lab/QuiltNet-tiny"})
    local = build_tower({"name": "open_clip", "path": str(open_clip_dirs["clip"])})
    assert cached.weights_digest() == local.weights_digest()
    with pytest.raises(ConfigError, match="huggingface-cli download lab/absent"):
        build_tower({"name": "open_clip", "path": "lab/absent"})


@pytest.mark.parametrize("change, named", [
    ({"vision_cfg": {"layers": [1, 1, 1, 1], "width": 64}}, "ModifiedResNet"),
    ({"vision_cfg": {"ls_init_value": 1e-5}}, "vision_cfg.ls_init_value"),
    ({"text_cfg": {"pool_type": "first"}}, "text_cfg.pool_type"),
    ({"vision_cfg": {"timm_model_name": "convnext_tiny", "timm_pool": "avg"}}, "timm_pool='avg'"),
])
def test_an_unknown_architecture_is_refused_with_the_supported_list(change, named, open_clip_dirs, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(open_clip_dirs["clip"], directory)
    config = json.loads((directory / "open_clip_config.json").read_text())
    for side, values in change.items():
        config["model_cfg"][side].update(values)
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        build_tower({"name": "open_clip", "path": str(directory)})
    message = str(err.value)
    assert named in message and "timm ViT + Hugging Face text" in message and "CoCa" in message and "\n" not in message


def test_pickled_code_in_a_checkpoint_never_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    (tmp_path / "ckpt").mkdir()
    torch.save({"visual.proj": Payload()}, tmp_path / "ckpt" / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"weights_only=True"):
        build_tower({"name": "open_clip", "path": str(tmp_path / "ckpt"), "model": "ViT-B-32"})
    assert (tmp_path / "victim").is_dir()


def test_the_bert_config_is_inferred_when_the_hub_config_is_not_cached(open_clip_oracle, open_clip_dirs, tmp_path):
    directory = tmp_path / "biomedclip"
    shutil.copytree(open_clip_dirs["timm_hf"], directory)
    config = json.loads((directory / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["hf_model_name"] = "microsoft/not-in-this-cache"
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    inferred = build_tower({"name": "open_clip", "path": str(directory)}).eval()
    cached = build_tower({"name": "open_clip", "path": str(open_clip_dirs["timm_hf"])}).eval()
    assert inferred.text_encoder.config.num_attention_heads == cached.text_encoder.config.num_attention_heads == 2
    tok = cached.tokenize(SENTENCES)
    with torch.no_grad():
        torch.testing.assert_close(inferred.encode_text(**tok), cached.encode_text(**tok), atol=1e-6, rtol=0)


def _unwrapped(name: str) -> str:
    return name.replace("base_layer.", "")


def test_lora_on_qkv_and_out_of_a_converted_tower_runs_end_to_end(make_cfg, open_clip_oracle, open_clip_dirs):
    """The main job with ``tower=open_clip``: LoRA on q, k, v and out of both sides trains only
    the adapters and heads, the validation loss falls, and the bundle's adapter loads through
    ``load_bundle`` and through ``PeftModel.from_pretrained`` on the converted base model; the
    merged export is an open_clip checkpoint that open_clip itself loads, and the ONNX image side
    matches."""
    import csv

    from peft import PeftModel

    import domainclip
    from domainclip.pipeline.run import run

    directory = open_clip_dirs["clip"]
    result = run(make_cfg("recipe=pathology", "tower=open_clip", f"tower.path={directory}", "method=lora",
                          "method.sides=[image,text]", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                          "export.merge=true", "export.onnx=true"))
    rows = list(csv.DictReader((result.run_dir / "logs" / "version_0" / "metrics.csv").open()))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 3 and val[-1] < val[0]

    predictor = domainclip.load_bundle(result.bundle_dir)
    adapted = dict(predictor.model.tower.named_parameters())
    base = build_tower({"name": "open_clip", "path": str(directory)})
    lora = [n for n in adapted if "lora_" in n]
    assert {n.split(".")[-3] for n in lora} == {"lora_A", "lora_B"}  # ...q_proj.lora_A.default.weight
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert {n.split(".")[1] for n in lora} == {"vision_model", "text_model"}
    assert any(adapted[n].abs().max() > 0 for n in lora if "lora_B" in n)  # trained away from peft's zero init
    heads = ("model.visual_projection.", "model.text_projection.", "log_logit_scale", "logit_bias")
    for name, value in base.named_parameters():
        if not name.startswith(heads):
            key = next(k for k in adapted if _unwrapped(k) == name)
            assert torch.equal(adapted[key], value), name  # the base weights are untouched

    peft_base, _ = base.lora_scope(["image", "text"])
    PeftModel.from_pretrained(peft_base, result.bundle_dir)
    base.eval()
    pixels = torch.randn(2, 3, 32, 32)
    tok = base.tokenize(["a tumour tile.", "normal tissue."])
    with torch.no_grad():
        torch.testing.assert_close(base.image_features(pixels), predictor.model.tower.image_features(pixels))
        torch.testing.assert_close(base.text_features(**tok), predictor.model.tower.text_features(**tok))

    merged = open_clip_oracle.create_model(f"local-dir:{result.bundle_dir / 'merged'}").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged.encode_image(pixels), predictor.model.tower.encode_image(pixels),
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(merged.encode_text(tok["input_ids"]), predictor.model.tower.encode_text(**tok),
                                   atol=1e-4, rtol=0)
    assert merged.logit_scale.item() == pytest.approx(predictor.model.tower.log_logit_scale.item(), abs=1e-6)

    import numpy as np
    import onnxruntime as ort

    onnx = ort.InferenceSession(str(result.bundle_dir / "image_encoder.onnx")).run(None, {"pixels": pixels.numpy()})[0]
    np.testing.assert_allclose(onnx, predictor.embed_images(pixels).numpy(), atol=1e-4)


@pytest.mark.parametrize("mode", ["shortest", "longest"])
def test_resize_modes_match_open_clips_pil_pipeline(mode):
    """open_clip resizes PIL images with bicubic interpolation, then centre-crops (``shortest``) or
    pads (``longest``) to a square; the tensor pipeline gives the same pixels (to PIL's rounding)."""
    import numpy as np
    from PIL import Image

    from domainclip.transforms.pipeline import Preprocess, to_tensor

    rng = np.random.default_rng(0)
    image = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    pre = Preprocess(size=32, mean=(0.0,), std=(1.0,), resize_mode=mode, interpolation="bicubic")
    got = to_tensor(image.transpose(2, 0, 1).astype(np.float32) / 255, pre).numpy()
    h, w = (32, 53) if mode == "shortest" else (19, 32)  # torchvision's int(size * ratio)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC)).astype(np.float32) / 255
    expected = np.zeros((32, 32, 3), np.float32)
    if mode == "shortest":
        left = int(round((w - 32) / 2.0))
        expected[:] = resized[:, left:left + 32]
    else:
        top = int(round((32 - h) / 2.0))
        expected[top:top + h] = resized
        assert got[:, :top].max() == 0 and got[:, top + h:].max() == 0  # zero padding, as open_clip fills
    diff = np.abs(got.transpose(1, 2, 0) - expected)
    assert diff.mean() < 0.003 and diff.max() < 0.03


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointing_and_fsdp_blocks_work_as_for_hf_clip(family, open_clip_dirs):
    """``tower.activation_checkpointing`` recomputes the converted blocks (same gradients), and
    every converted transformer block is one FSDP wraps by default."""
    from domainclip.training.strategies import TRANSFORMER_BLOCKS, import_classes

    cfg = {"name": "open_clip", "path": str(open_clip_dirs[family])}
    grads = []
    for checkpointing in (False, True):
        tower = build_tower({**cfg, "activation_checkpointing": checkpointing}).train()
        assert tower.image_encoder.is_gradient_checkpointing == checkpointing == tower.text_encoder.is_gradient_checkpointing
        tower.zero_grad()
        tok = tower.tokenize(SENTENCES[:2])
        torch.manual_seed(0)
        tower.eval()  # no dropout, so both passes compute the same function
        tower.image_encoder.train(), tower.text_encoder.train()
        for m in tower.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        (tower.encode_image(torch.ones(2, 3, 32, 32)).sum() + tower.encode_text(**tok).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)
    blocks = tuple(import_classes(TRANSFORMER_BLOCKS))
    wrapped = [m for m in tower.modules() if isinstance(m, blocks)]
    expected = tower.image_encoder.config.num_hidden_layers + tower.text_encoder.config.num_hidden_layers
    assert len(wrapped) == expected == 4  # every block of both sides (2 + 2 in these checkpoints)
