"""Export bundles: round trips, peft/transformers compatibility, merge, ONNX, PHI audit, safety."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import domainclip
from domainclip.core.errors import BundleError
from domainclip.export.bundle import write_sums
from domainclip.pipeline.objectives import adapt
from domainclip.pipeline.run import adaptation, export_bundle, setup

TINY = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def fit_and_export(cfg):
    parts = setup(cfg)
    adapt(adaptation(parts))
    return parts, export_bundle(parts, {"zero_shot_after": {}})


def in_process_probs(task, pixels):
    with torch.inference_mode():
        task.eval()
        return task.logits({"pixels": pixels}).softmax(-1)


@pytest.fixture(scope="module")
def tiny_both(tmp_path_factory, tiny_clip_dir):
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir

    out = tmp_path_factory.mktemp("tiny-both")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                                           "method.sides=[image,text]", "export.merge=true", "export.onnx=true",
                                           f"run_dir={out}", *TINY])
    return fit_and_export(cfg)


@pytest.mark.parametrize("overrides", [
    ["method=lora", "method.sides=[text]"],
    ["method=lora", "method.sides=[image]"],
    ["method=zero_shot"],
    ["method=linear_probe"],
    ["method=coop"],
    ["method=cocoop"],
    ["method=vpt"],
    ["method=full", "method.unlocked_layers=1"],
    ["method=wise_ft", "method.inner=lora", "+method.inner_options.sides=[text]"],
], ids=lambda o: "-".join(x.split("=", 1)[1] for x in o))
def test_round_trip_predictions_equal_in_process(make_cfg, tiny_clip_dir, overrides):
    parts, bundle = fit_and_export(make_cfg("recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                                            *overrides, *TINY))
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    predictor = domainclip.load_bundle(bundle)
    torch.testing.assert_close(predictor.predict(pixels), in_process_probs(parts.task, pixels), atol=1e-6, rtol=1e-5)
    assert predictor.classes == parts.data.class_names


def test_adapter_loads_with_peft_alone(tiny_both, tiny_clip_dir):
    from peft import PeftModel
    from transformers import CLIPModel

    parts, bundle = tiny_both
    peft_model = PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_clip_dir), bundle).eval()
    tok = parts.task.tower.tokenize(["an H&E image of tumour."])
    pixels = torch.randn(2, 3, 32, 32)
    base = peft_model.base_model.model
    with torch.inference_mode():
        parts.task.eval()
        ours = parts.task.tower.text_features(**tok), parts.task.tower.backbone_features(pixels)
        theirs = base.text_model(**tok).pooler_output, base.vision_model(pixel_values=pixels).pooler_output
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


def test_merged_model_equals_adapter_form(tiny_both):
    from transformers import CLIPModel

    parts, bundle = tiny_both
    merged = CLIPModel.from_pretrained(bundle / "merged").eval()
    predictor = domainclip.load_bundle(bundle)
    tok = predictor.tower.tokenize(["an H&E image of stroma.", "adipose"])
    pixels = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        img = merged.visual_projection(merged.vision_model(pixel_values=pixels).pooler_output)
        txt = merged.text_projection(merged.text_model(**tok).pooler_output)
        assert (img - predictor.tower.encode_image(pixels)).abs().max() < 1e-5
        assert (txt - predictor.tower.encode_text(**tok)).abs().max() < 1e-5
        assert torch.isclose(merged.logit_scale.exp(), predictor.tower.logit_scale)


def test_onnx_image_side_matches_pytorch(tiny_both):
    import onnxruntime as ort

    _, bundle = tiny_both
    predictor = domainclip.load_bundle(bundle)
    pixels = torch.randn(4, 3, 32, 32)
    onnx_out = ort.InferenceSession(str(bundle / "image_encoder.onnx")).run(None, {"pixels": pixels.numpy()})[0]
    np.testing.assert_allclose(onnx_out, predictor.embed_images(pixels).numpy(), atol=1e-4)
    assert "image_encoder.onnx" in (bundle / "SHA256SUMS").read_text()


def test_bundle_layout_and_schema(tiny_both):
    from domainclip.export.schema import SCHEMA_FILE, json_schema

    _, bundle = tiny_both
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"metadata.json", "MODEL_CARD.md", "SHA256SUMS", "adapter_config.json", "adapter_model.safetensors",
            "heads.safetensors", "data_card.yaml", "reproduce.yaml", "merged/model.safetensors"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    card = (bundle / "MODEL_CARD.md").read_text()
    for section in ("Intended use", "Out-of-scope", "Data (CLAIM", "Captions", "Performance", "Calibration",
                    "Subgroups", "Known limitations", "How to reproduce"):
        assert section in card


def test_pickle_payload_in_bundle_is_never_executed(tiny_both, tmp_path):
    _, bundle = tiny_both
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("adapter_model.bin", "heads.pt"):
        (copy / name).write_bytes(pickle.dumps(Payload()))
    write_sums(copy)  # even with the checksums updated by the attacker
    with pytest.raises(BundleError, match="pickle"):
        domainclip.load_bundle(copy)
    assert not marker.exists()


def test_base_weights_mismatch_is_refused(tiny_both, tmp_path):
    _, bundle = tiny_both
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["tower"]["weights_digest"] = "0" * 64
    (copy / "metadata.json").write_text(json.dumps(meta))
    write_sums(copy)
    with pytest.raises(BundleError, match="base tower's weights differ"):
        domainclip.load_bundle(copy)


def test_phi_canary_in_captions_refuses_export_and_writes_nothing(tmp_path, make_cfg):
    from domainclip.demo.radiology import _write_dicom

    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        patient = f"P{i // 3:02d}"
        (tmp_path / patient).mkdir(exist_ok=True)
        name = "ZEBULON^CANARYSTRING" if i < 3 else f"ANON^{patient}"
        _write_dicom(tmp_path / f"{patient}/{i}.dcm", rng.normal(-500, 300, (32, 32)).astype(np.float32),
                     patient, f"1.2.{i // 3}", f"1.2.{i // 3}.1", i, rng)
        import pydicom

        ds = pydicom.dcmread(tmp_path / f"{patient}/{i}.dcm")
        ds.PatientName = name
        ds.save_as(tmp_path / f"{patient}/{i}.dcm")
        rows.append(f"{patient}/{i}.dcm,{'a' if i % 2 else 'b'},{patient}\n")
    (tmp_path / "labels.csv").write_text("path,label,patient\n" + "".join(rows))
    card = {"name": "canary", "modality": "CT", "body_part": "chest", "license": "test",
            "reader": {"name": "dicom", "options": {"window": "lung"}}, "manifest": "labels.csv",
            "columns": {"path": "path", "label": "label", "group": "patient"},
            "classes": [{"name": "a", "description": "as reported by dr canarystring"}, {"name": "b"}]}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    cfg = make_cfg(f"data.card={tmp_path / 'card.yaml'}", "tower.image.size=32", *TINY)
    parts = setup(cfg)
    with pytest.raises(BundleError) as err:
        export_bundle(parts, {})
    msg = str(err.value)
    assert "PatientName" in msg and ("captions[" in msg or "card_text" in msg) and "not written" in msg
    assert not (parts.run_dir / "bundle").exists() and not (parts.run_dir / "bundle.partial").exists()


def test_missing_license_fails_export_naming_the_field(tmp_path, make_cfg):
    from domainclip.core.paths import data_cards_dir

    card = yaml.safe_load((data_cards_dir() / "demo_pathology.yaml").read_text())
    card["license"] = ""
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    parts = setup(make_cfg(f"data.card={tmp_path / 'card.yaml'}", "tower.image.size=32", "method=zero_shot"))
    with pytest.raises(BundleError, match="data_card.license"):
        export_bundle(parts, {})


def test_reexport_cli_reproduces_the_bundle(tiny_both):
    parts, bundle = tiny_both
    (parts.run_dir / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(parts.cfg, resolve=True))
    (parts.run_dir / "metrics.json").write_text(json.dumps({"metrics": {"zero_shot_after": {}}}))
    before = (bundle / "SHA256SUMS").read_text()
    proc = subprocess.run([sys.executable, "-m", "domainclip.export", f"run_dir={parts.run_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = (bundle / "SHA256SUMS").read_text()
    strip = lambda s: sorted(l for l in s.splitlines() if "image_encoder.onnx" not in l)  # noqa: E731
    assert strip(after) == strip(before)
