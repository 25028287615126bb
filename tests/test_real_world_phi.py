"""The PHI audit on real-world names: its own vocabulary is not PHI, every finding names its file
and tag, reviewed values can be allowed (and are recorded), and a refused bundle loses no metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import yaml
from test_hostile_files import dicom_card

from domainclip.core.errors import BundleError
from domainclip.pipeline.run import export_bundle, run, setup

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.bootstrap=0", "tower.image.size=32"]


def rename_patients(root: Path, name: str) -> None:
    for path in root.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName = name
        ds.save_as(path)


def test_patient_name_made_of_the_audits_own_words_exports(tmp_path, make_cfg):
    card = dicom_card(tmp_path, {})
    rename_patients(tmp_path, "NAME^PATIENT^NAME")  # a real file's PatientName; the split level is 'patient'
    parts = setup(make_cfg("recipe=radiology", f"data.card={card}", "method=zero_shot", *FAST))
    bundle = export_bundle(parts, {})
    assert (bundle / "metadata.json").is_file()


def test_findings_name_file_and_tag_and_reviewed_values_can_be_allowed(tmp_path, make_cfg):
    card = dicom_card(tmp_path, {})
    rename_patients(tmp_path, "DOE^QUINCEWORTH")
    spec = yaml.safe_load(card.read_text())
    spec["description"] = "CT slices reviewed by quinceworth"  # a surname that is also the reviewer's
    card.write_text(yaml.safe_dump(spec))
    parts = setup(make_cfg("recipe=radiology", f"data.card={card}", "method=zero_shot", *FAST))
    with pytest.raises(BundleError, match=r"DICOM tag PatientName of \d+\.dcm.*phi\.allow"):
        export_bundle(parts, {})
    spec["phi"] = {"allow": ["QUINCEWORTH"]}
    card.write_text(yaml.safe_dump(spec))
    parts = setup(make_cfg("recipe=radiology", f"data.card={card}", "method=zero_shot", *FAST))
    bundle = export_bundle(parts, {})
    assert json.loads((bundle / "metadata.json").read_text())["phi_allowed"] == ["QUINCEWORTH"]
    assert "QUINCEWORTH" in (bundle / "MODEL_CARD.md").read_text()


def test_refused_export_still_writes_metrics_and_report(tmp_path, make_cfg):
    card = dicom_card(tmp_path, {})
    rename_patients(tmp_path, "DOE^QUINCEWORTH")
    card.write_text(card.read_text() + "# collected by quinceworth\n")  # only the bundle's data_card.yaml has it
    cfg = make_cfg("recipe=radiology", f"data.card={card}", *FAST)
    with pytest.raises(BundleError, match="data_card"):
        run(cfg)
    summary = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    assert "PHI audit failed" in summary["export"]["refused"] and summary["metrics"]["zero_shot_after"]["test"]
    assert (Path(cfg.run_dir) / "report" / "summary.md").is_file()
    assert not (Path(cfg.run_dir) / "bundle").exists()
