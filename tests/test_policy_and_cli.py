"""Bad-file policy (fail / skip with quarantine) and the cards / doctor command lines."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from domainclip.data import ImageDataset, load_card_data
from domainclip.data.preflight import UnreadableFilesError
from domainclip.demo.radiology import _write_dicom
from domainclip.transforms.pipeline import DomainOptions, Preprocess

CORRUPT = [3, 41, 87, 122, 199]


def make_dicom_folder(root, corrupt=()):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        patient = f"P{i // 5:03d}"
        (root / patient).mkdir(parents=True, exist_ok=True)
        rel = f"{patient}/{i % 5}.dcm"
        hu = rng.normal(-500, 300, (32, 32)).astype(np.float32)
        _write_dicom(root / rel, hu, patient, f"1.2.3.{i // 5}", f"1.2.3.{i // 5}.1", i % 5, rng)
        if i in corrupt:
            (root / rel).write_bytes((root / rel).read_bytes()[:300])
        rows.append(f"{rel},{'a' if i % 2 else 'b'},{patient}\n")
    (root / "labels.csv").write_text("path,label,patient\n" + "".join(rows))
    card = {"name": "dicoms", "modality": "CT", "reader": {"name": "dicom", "options": {"window": "lung"}},
            "manifest": "labels.csv", "columns": {"path": "path", "label": "label", "group": "patient"},
            "classes": [{"name": "a"}, {"name": "b"}]}
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("dicoms")
    return make_dicom_folder(base / "clean"), make_dicom_folder(base / "corrupt", CORRUPT)


def tensors(data, split):
    ds = ImageDataset(data.splits[split], "dicom", {"window": "lung"}, DomainOptions(), Preprocess(size=32), 2)
    return {str(r.path.relative_to(data.root)): ds.load(i) for i, r in enumerate(ds.records)}


def test_fail_lists_every_unreadable_file(folders):
    with pytest.raises(UnreadableFilesError) as err:
        load_card_data(folders[1], on_error="fail")
    msg = str(err.value)
    assert msg.startswith("5 file(s)") and all(f"P{i // 5:03d}/{i % 5}.dcm" in msg for i in CORRUPT)


def test_skip_processes_the_other_195_exactly_as_a_clean_run(folders):
    clean, dirty = load_card_data(folders[0], on_error="skip"), load_card_data(folders[1], on_error="skip")
    assert not clean.quarantine and len(dirty.quarantine) == 5
    assert sum(len(r) for r in dirty.splits.values()) == 195
    bad = {f"P{i // 5:03d}/{i % 5}.dcm" for i in CORRUPT}
    for split in ("train", "val", "test"):
        a, b = tensors(clean, split), tensors(dirty, split)
        assert set(b) == set(a) - bad
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_run_writes_quarantine_and_counts_skips(folders, make_cfg):
    from domainclip.pipeline.run import run

    result = run(make_cfg(f"data.card={folders[1]}", "data.on_error=skip", "trainer.max_epochs=1",
                          "tower.image.size=64", "export.enabled=false", "trainer.enable_progress_bar=false"))
    lines = (result.run_dir / "quarantine.jsonl").read_text().splitlines()
    assert len(lines) == 5 and {"path", "stage", "error", "split"} <= set(json.loads(lines[0]))
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["skipped"]["count"] == 5
    assert "Skipped (unreadable, listed in quarantine.jsonl): 5" in (result.run_dir / "report" / "summary.md").read_text()


def cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_cards_validate_exit_codes(tmp_path):
    ok = cli("domainclip.cards", "validate", "demo_pathology")
    assert ok.returncode == 0 and "valid: demo_pathology" in ok.stdout
    shutil.copy(__import__("domainclip.core.paths", fromlist=["x"]).data_cards_dir() / "demo_pathology.yaml", tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text().replace("reader:\n  name: tiles", "reader:\n  _target_: os.system\n  name: tiles")
    (tmp_path / "c.yaml").write_text(text)
    bad = cli("domainclip.cards", "validate", str(tmp_path / "c.yaml"))
    assert bad.returncode == 1 and "reader._target_" in bad.stderr


def test_doctor_reports_and_fails_on_problems(folders):
    good = cli("domainclip.doctor", str(folders[0]))
    assert good.returncode == 0, good.stdout
    assert "Explicit VR Little Endian: 200 file(s) decodable" in good.stdout and "unreadable: 0" in good.stdout
    bad = cli("domainclip.doctor", str(folders[1]))
    assert bad.returncode == 1 and "unreadable: 5" in bad.stdout and "P000/3.dcm" in bad.stdout


def test_learnable_band_projection_end_to_end(tmp_path, make_cfg, tiny_tower):
    import domainclip
    from domainclip.core.paths import data_cards_dir
    from domainclip.pipeline.run import run

    card = yaml.safe_load((data_cards_dir() / "demo_satellite.yaml").read_text())
    card["transforms"]["band_projection"] = True
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    result = run(make_cfg(f"data.card={tmp_path / 'card.yaml'}", *tiny_tower, "trainer.max_epochs=1",
                          "trainer.enable_progress_bar=false"))
    predictor = domainclip.load_bundle(result.bundle_dir)
    assert predictor.model.input_adapter.proj.in_channels == 4
    test = load_card_data(tmp_path / "card.yaml").splits["test"]
    top1 = (predictor.predict([r.path for r in test]).argmax(-1) == torch.tensor([r.label for r in test])).float().mean()
    assert float(top1) == pytest.approx(result.metrics["zero_shot_after"]["test"]["top1"])
