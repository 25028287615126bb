"""Synthetic CT slices written as real DICOM files (HU via RescaleSlope/Intercept), at two sites.

Findings vary as in real studies: nodules from 3 to 8 mm across and from faint ground-glass to
solid, consolidation from a small patch to a lobe, effusions from a thin rim to a layer; about 6%
of labels disagree with the pixels (reader disagreement). Site B is another vendor and protocol: a
sharper reconstruction kernel, more noise, an HU calibration offset and a smaller field of view.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from domainclip.demo.common import NO_FINDING, disks, write_class_map, write_manifest, write_readme

CLASSES = ("normal", "nodule", "consolidation", "effusion")
SIZE = 128
SLICES = 5
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _ellipse(cy, cx, ry, rx) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _anatomy(rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """A patient's body and two lungs (shared by all of that patient's slices)."""
    body = (SIZE / 2 + rng.uniform(-3, 3), SIZE / 2, rng.uniform(40, 48), rng.uniform(54, 60))
    lungs = [(body[0] - 2, body[1] + side * body[3] * 0.45, body[2] * 0.72, body[3] * 0.36) for side in (-1, 1)]
    return body, lungs


def _slice_hu(rng, body, lungs, label: str, site: dict) -> tuple[np.ndarray, np.ndarray]:
    """One slice in HU with ``label``'s finding, and the finding's mask (the pixels it changed)."""
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[_ellipse(*body)] = 40.0
    masks = [_ellipse(*lung) for lung in lungs]
    for m in masks:
        hu[m] = -850.0
    vessels = disks((SIZE, SIZE), rng.uniform(20, SIZE - 20, (25, 2)), rng.uniform(0.6, 1.4, 25))
    lung_any = masks[0] | masks[1]
    hu = np.where(lung_any, hu + vessels * 800.0, hu)
    side = rng.integers(0, 2)
    cy, cx, ry, rx = lungs[side]
    finding = np.zeros((SIZE, SIZE), bool)
    if label == "nodule":
        c = np.array([[cy + rng.uniform(-0.4, 0.4) * ry, cx + rng.uniform(-0.4, 0.4) * rx]])
        lesion = disks((SIZE, SIZE), c, [rng.uniform(2.5, 6.0)]) * rng.uniform(400, 880)
        hu = np.where(masks[side], np.maximum(hu, -850 + lesion), hu)
        finding = masks[side] & (lesion > 0)
    elif label == "consolidation":
        patch = ndimage.gaussian_filter(rng.normal(0, 1, (SIZE, SIZE)), 6) > rng.uniform(0.0, 0.08)
        finding = masks[side] & patch & _ellipse(cy + ry * 0.3, cx, ry * rng.uniform(0.45, 0.8), rx * rng.uniform(0.6, 1))
        hu[finding] = rng.uniform(-300, 20)
    elif label == "effusion":
        yy = np.mgrid[:SIZE, :SIZE][0]
        fluid = rng.uniform(0, 25)  # drawn before the level, as the demo always has
        finding = masks[side] & (yy > cy + ry * rng.uniform(0.25, 0.65))
        hu[finding] = fluid
    if site["zoom"] != 1.0:  # a smaller reconstruction field of view: anatomy and findings appear larger
        hu, finding = _zoom_centre(hu, site["zoom"], 1), _zoom_centre(finding.astype(np.float32), site["zoom"], 0) > 0.5
    if site["sharpen"]:
        hu = hu + site["sharpen"] * (hu - ndimage.gaussian_filter(hu, 1.0))
    return hu + site["offset"] + rng.normal(0, site["noise"], hu.shape).astype(np.float32), finding


def _zoom_centre(arr: np.ndarray, zoom: float, order: int) -> np.ndarray:
    big = ndimage.zoom(arr, zoom, order=order)
    start = (big.shape[0] - SIZE) // 2
    return big[start : start + SIZE, start : start + SIZE]


SITES = {  # per site: patients, noise sd (HU), kernel sharpening gain, HU calibration offset, field-of-view zoom
    "A": {"patients": 48, "noise": 15.0, "sharpen": 0.0, "offset": 0.0, "zoom": 1.0},
    "B": {"patients": 24, "noise": 120.0, "sharpen": 3.5, "offset": 120.0, "zoom": 1.3},
}
DISAGREEMENT = 0.06


def _write_dicom(path: Path, hu: np.ndarray, patient: str, study_uid: str, series_uid: str, z: int, rng) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid(entropy_srcs=[series_uid, str(z)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop_uid
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient, f"SYNTH{patient[-3:]}^PATIENT{patient[-3:]}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.BodyPartExamined, ds.InstanceNumber = "CHEST", z + 1
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 5.0
    ds.ImagePositionPatient = [0.0, 0.0, float(z) * 5.0]
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate(root: Path, seed: int, site: str = "A") -> None:
    """Write ``dicom/<patient>/<slice>.dcm`` plus ``manifest.csv`` (path, label, patient_id), and
    each slice's finding mask as ``masks/<patient>/<slice>.png`` (the class index where the
    finding is, 255 elsewhere)."""
    from pydicom.uid import generate_uid

    spec = SITES[site]
    rng = np.random.default_rng(seed + (0 if site == "A" else 1000))
    rows = []
    for p in range(spec["patients"]):
        patient = f"DEMO{p:03d}" if site == "A" else f"DEMO{site}{p:03d}"
        (root / "dicom" / patient).mkdir(parents=True)
        study, series = generate_uid(entropy_srcs=[patient, "study"]), generate_uid(entropy_srcs=[patient, "series"])
        body, lungs = _anatomy(rng)
        for z in range(SLICES):
            truth = CLASSES[(z + p) % len(CLASSES)]
            rel = f"dicom/{patient}/{z:03d}.dcm"
            hu, finding = _slice_hu(rng, body, lungs, truth, spec)
            _write_dicom(root / rel, hu, patient, study, series, z, rng)
            write_class_map(root / "masks" / f"{patient}/{z:03d}.png", np.where(finding, CLASSES.index(truth), NO_FINDING))
            label = truth if rng.random() >= DISAGREEMENT else CLASSES[(CLASSES.index(truth) + rng.integers(1, 4)) % 4]
            scanner = ("VENDOR-X", "VENDOR-Y")[p % 2] if site == "A" else "VENDOR-Z"
            rows.append({"path": rel, "label": label, "patient_id": patient, "scanner": scanner})
    write_manifest(root, rows)
    write_readme(root, f"Demo chest CT, site {site}", f"{len(rows)} single-slice CT DICOM files ({SIZE} px, HU = "
                 f"stored - 1024) for {spec['patients']} synthetic patients, classes {', '.join(CLASSES)}; split at "
                 f"patient level. {__doc__}")


def generate_site_b(root: Path, seed: int) -> None:
    """Site B of the CT demo (another vendor's kernel, noise and calibration)."""
    generate(root, seed, site="B")
