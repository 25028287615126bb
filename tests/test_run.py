"""End-to-end runs through run(cfg): every recipe, the tiny CLIP tower, bundle reload."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import domainclip
from domainclip.core.errors import ConfigError
from domainclip.data import load_card_data
from domainclip.pipeline.run import run

FAST = ["trainer.enable_progress_bar=false", "tower.image.size=64"]  # the size test_evaluation runs radiology at: one feature pass


@pytest.fixture(scope="module")
def pathology_run(tmp_path_factory):
    """The main job at its default settings (the README's first command, minus Hydra)."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir

    out = tmp_path_factory.mktemp("pathology")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=pathology", f"run_dir={out}", "trainer.enable_progress_bar=false"])
    return run(cfg)


def test_main_job_beats_twice_chance_and_improves(pathology_run):
    m = pathology_run.metrics
    before, after = m["zero_shot_before"]["test"], m["zero_shot_after"]["test"]
    assert after["top1"] >= 2 * after["chance"]
    assert after["top1"] > before["top1"]


def test_main_job_demo_behaves_like_real_data(pathology_run):
    """The demo targets: zero-shot near chance, the adapted model between chance and perfect with
    CIs of real width, and the second site worse than the first."""
    m = pathology_run.metrics
    assert m["zero_shot_before"]["test"]["top1"] <= 0.45
    img = m["clinical"]["image_level"]
    assert 0.70 <= img["top1"] <= 0.92 and img["top1_ci"][1] - img["top1_ci"][0] > 0.03
    assert m["sites"]["differences"]["demo_pathology_site_b"]["top1"]["difference"] < 0


def test_run_dir_holds_config_metrics_report_bundle(pathology_run):
    d = pathology_run.run_dir
    assert (d / "config.yaml").is_file() and (d / "report" / "summary.md").is_file()
    saved = json.loads((d / "metrics.json").read_text())
    assert saved["metrics"]["zero_shot_after"]["test"]["top1"] == pathology_run.metrics["zero_shot_after"]["test"]["top1"]
    for f in ("metadata.json", "MODEL_CARD.md", "SHA256SUMS", "adapter_config.json", "adapter_model.safetensors",
              "heads.safetensors"):
        assert (d / "bundle" / f).is_file(), f
    assert (d / "logs" / "version_0" / "metrics.csv").is_file()


def test_bundle_reproduces_test_metrics(pathology_run):
    predictor = domainclip.load_bundle(pathology_run.bundle_dir)
    test = load_card_data("demo_pathology").splits["test"]
    probs = predictor.predict([r.path for r in test])
    top1 = (probs.argmax(-1) == torch.tensor([r.label for r in test])).float().mean().item()
    assert top1 == pytest.approx(pathology_run.metrics["zero_shot_after"]["test"]["top1"], abs=1e-9)
    assert torch.allclose(probs.sum(-1), torch.ones(len(test)))


def test_tampered_bundle_is_refused(pathology_run, tmp_path):
    import shutil

    from domainclip.core.errors import BundleError

    copy = tmp_path / "bundle"
    shutil.copytree(pathology_run.bundle_dir, copy)
    data = bytearray((copy / "heads.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "heads.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="heads.safetensors"):
        domainclip.load_bundle(copy)


@pytest.mark.parametrize("recipe", ["radiology", "satellite"])
def test_other_recipes_smoke(make_cfg, recipe):
    result = run(make_cfg(f"recipe={recipe}", "trainer.max_epochs=1", *FAST))
    after = result.metrics["zero_shot_after"]["test"]
    assert after["n"] > 0 and 0.0 <= after["top1"] <= 1.0
    assert (result.bundle_dir / "metadata.json").is_file()


def test_tiny_hf_clip_tower_runs_end_to_end(make_cfg, tiny_clip_dir):
    result = run(make_cfg("recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                          "trainer.max_epochs=1", "trainer.enable_progress_bar=false"))
    predictor = domainclip.load_bundle(result.bundle_dir)
    assert predictor.predict(torch.randn(3, 3, 32, 32)).shape == (3, 4)


def test_feature_cache_hit_on_second_run(make_cfg, tiny_tower):
    overrides = ["recipe=satellite", *tiny_tower, "trainer.max_epochs=1", "export.enabled=false",
                 "trainer.enable_progress_bar=false"]
    run(make_cfg(*overrides))
    second = run(make_cfg(*overrides))
    saved = json.loads((second.run_dir / "metrics.json").read_text())
    assert all(saved["cache_hits"].values())


@pytest.mark.parametrize("args, expect", [
    (["recipe=nope"], "Available options in 'recipe'"),
    (["method=nope"], "Available options in 'method'"),
    (["tower=nope"], "Available options in 'tower'"),
    (["data.card=/nonexistent/card.yaml"], "data card '/nonexistent/card.yaml' not found"),
    (["loss.name=nope"], "allowed values: clip, label_aware, siglip"),
])
def test_user_mistakes_get_a_clear_error_not_a_traceback(tmp_path, args, expect, monkeypatch, capsys):
    """Through the entry point's own ``main`` in this process (what ``python -m domainclip`` runs);
    ``test_hostile_runs`` runs a bad value in a fresh interpreter."""
    from domainclip.__main__ import main

    monkeypatch.setattr(sys, "argv", ["domainclip", *args, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert exit_.value.code not in (0, None)
    assert expect in out.err + out.out
    assert "Traceback" not in out.err


def test_standalone_evaluate_reproduces_run_metrics(pathology_run, tmp_path, capsys):
    """``python -m domainclip.evaluate``'s own ``main`` in this process (the bundle's loader shares
    nothing with the run that trained it)."""
    from domainclip.evaluate import main

    assert main([f"bundle={pathology_run.bundle_dir}", "card=demo_pathology", f"out={tmp_path}"]) == 0, \
        capsys.readouterr().err[-2000:]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    got, want = saved["metrics"], pathology_run.metrics["zero_shot_after"]["test"]
    assert got["top1"] == want["top1"] and got["macro_auroc"] == pytest.approx(want["macro_auroc"], abs=1e-6)
    ours, theirs = saved["clinical"]["image_level"], pathology_run.metrics["clinical"]["image_level"]
    for key in ("top1", "balanced_accuracy", "ece", "brier", "top1_ci", "balanced_accuracy_ci"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    assert saved["clinical"]["thresholds"] == pathology_run.metrics["clinical"]["thresholds"]


def test_wandb_logger_runs_offline(make_cfg, monkeypatch, tiny_tower):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run(make_cfg("recipe=satellite", *tiny_tower, "logger=wandb", "trainer.max_epochs=1", "export.enabled=false",
                          "trainer.enable_progress_bar=false"))
    offline_runs = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs, "wandb should write an offline run with no network"
    assert (result.run_dir / "logs" / "version_0" / "metrics.csv").is_file()  # CSV stays on


def test_bundle_reproduce_config_reruns_the_job(pathology_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "domainclip", "--config-dir", str(pathology_run.bundle_dir),
                           "--config-name", "reproduce", f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1",
                           "eval.bootstrap=10", "trainer.enable_progress_bar=false"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = json.loads((tmp_path / "metrics.json").read_text())
    assert rerun["card"] == "demo_pathology" and (tmp_path / "bundle" / "metadata.json").is_file()
    assert "run_dir" in (tmp_path / "config.yaml").read_text() and str(tmp_path) in (tmp_path / "config.yaml").read_text()


def test_main_job_evaluates_site_b_with_the_locked_model(pathology_run, tmp_path):
    """The recipe's external card is scored by the locked model; the standalone evaluator, given the
    bundle and the same card, reproduces the run's numbers (nothing refitted in either)."""
    from domainclip.evaluate import evaluate_bundle

    m = pathology_run.metrics
    sites = m["sites"]
    assert list(sites["sites"]) == ["demo_pathology", "demo_pathology_site_b"]
    external = m["external"]["demo_pathology_site_b"]
    assert external["temperature"] == m["clinical"]["temperature"] and external["thresholds"] == m["clinical"]["thresholds"]
    assert external["conformal"]["lac"]["threshold"] == m["clinical"]["conformal"]["lac"]["threshold"]
    diff = sites["differences"]["demo_pathology_site_b"]["top1"]
    assert diff["ci"][0] <= diff["difference"] <= diff["ci"][1]
    assert diff["difference"] == pytest.approx(sites["sites"]["demo_pathology_site_b"]["top1"] - sites["sites"]["demo_pathology"]["top1"])
    standalone = evaluate_bundle(pathology_run.bundle_dir, "demo_pathology_site_b", split="all")
    assert standalone["clinical"]["image_level"]["top1"] == pytest.approx(external["image_level"]["top1"], abs=1e-9)
    for score in ("lac", "aps"):
        assert standalone["clinical"]["conformal"][score]["coverage"] == pytest.approx(
            external["conformal"][score]["coverage"], abs=1e-9)


def test_bundle_prediction_sets_reproduce_run_coverage(pathology_run):
    predictor = domainclip.load_bundle(pathology_run.bundle_dir)
    conformal = pathology_run.metrics["clinical"]["conformal"]
    test = load_card_data("demo_pathology").splits["test"]
    paths, names = [r.path for r in test], predictor.classes
    sets = predictor.predict_sets(paths)
    covered = [names[r.label] in s for r, s in zip(test, sets)]
    assert sum(covered) / len(covered) == pytest.approx(conformal["lac"]["coverage"], abs=1e-9)
    assert sum(map(len, sets)) / len(sets) == pytest.approx(conformal["lac"]["mean_set_size"], abs=1e-9)
    aps = predictor.predict_sets(paths, score="aps")
    assert sum(names[r.label] in s for r, s in zip(test, aps)) / len(test) == pytest.approx(conformal["aps"]["coverage"])
    loose = predictor.predict_sets(paths, alpha=0.5)
    assert all(set(a) <= set(b) for a, b in zip(loose, sets)) and sum(map(len, loose)) < sum(map(len, sets))
    with pytest.raises(ValueError, match="alpha"):
        predictor.predict_sets(paths[:1], alpha=1.5)


def test_report_and_model_card_show_utility_sites_and_sets(pathology_run):
    d = pathology_run.run_dir
    summary = (d / "report" / "summary.md").read_text()
    for text in ("Decision curves", "Calibration slope", "Conformal prediction sets", "## Sites", "demo_pathology_site_b"):
        assert text in summary, text
    assert (d / "report" / "decision_curves.png").stat().st_size > 10_000
    card = (d / "bundle" / "MODEL_CARD.md").read_text()
    assert "demo_pathology_site_b" in card and "Conformal sets (LAC" in card and "Calibration slope" in card
    recal = pathology_run.metrics["clinical"]["recalibration"]
    assert any(r["slope"] is not None for r in recal.values())


def test_bundle_explain_gives_the_adapted_models_maps(pathology_run):
    predictor = domainclip.load_bundle(pathology_run.bundle_dir)
    paths = [r.path for r in load_card_data("demo_pathology").splits["test"][:3]]
    maps = predictor.explain(paths)
    size = predictor.preprocess.size
    assert maps.shape == (3, len(predictor.classes), size, size) and torch.isfinite(maps).all()
    assert torch.equal(maps, predictor.explain(paths))  # deterministic
    pixels = predictor._pixels(paths)
    with torch.no_grad():  # each location's probabilities, calibrated as predict calibrates
        grid = predictor.model.location_logits(pixels)
        calibrated = predictor.probabilities(grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]))
        expected = torch.nn.functional.interpolate(calibrated.reshape(3, *grid.shape[2:], -1).permute(0, 3, 1, 2),
                                                   size=(size, size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(maps, expected)
        torch.testing.assert_close(predictor.explain(paths, score="similarity"), predictor.model.similarity_maps(pixels))
    assert predictor.meta["temperature"] != 1.0 and torch.allclose(maps.sum(1), torch.ones(3, size, size))
    texts = predictor.explain(paths[:1], texts=["tumour cells", "fat"])
    assert texts.shape == (1, 2, size, size)
    with pytest.raises(ConfigError, match="score"):
        predictor.explain(paths[:1], texts=["fat"], score="probability")


def test_explain_command_writes_one_overlay_per_image_and_class(pathology_run, tmp_path, capsys):
    from PIL import Image

    from domainclip.explain import main

    paths = [str(r.path) for r in load_card_data("demo_pathology").splits["test"][:2]]
    assert main([str(pathology_run.bundle_dir), *paths, "--out", str(tmp_path / "maps")]) == 0
    index = json.loads((tmp_path / "maps" / "explain.json").read_text())
    classes = domainclip.load_bundle(pathology_run.bundle_dir).classes
    assert [e["input"] for e in index["images"]] == paths and list(index["images"][0]["maps"]) == classes
    pngs = sorted(p.name for p in (tmp_path / "maps").glob("*.png"))
    assert pngs == sorted(f"{i:04d}-{k:02d}_{c}.png" for i in range(2) for k, c in enumerate(classes))
    assert Image.open(tmp_path / "maps" / pngs[0]).size[0] > 300
    probs = domainclip.load_bundle(pathology_run.bundle_dir).predict(paths[:1])[0]
    assert [index["images"][0]["probabilities"][c] for c in classes] == pytest.approx(probs.tolist(), abs=1e-6)
    assert index["score"] == "probability"
    assert main([str(pathology_run.bundle_dir), *paths[:1], "--score", "similarity", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "explain.json").read_text())["score"] == "similarity"
    assert main([str(pathology_run.bundle_dir), str(tmp_path / "missing.png"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.png" in err[0]


def test_adapted_maps_point_at_the_labelled_tissue_and_beat_zero_shot(pathology_run):
    """The pointing game on the demo's test tiles, against the tissue maps the generator wrote
    beside them: the adapted model's map peaks inside the labelled tissue on >= 80% of the tiles
    that contain it, more often than the zero-shot model's (the run's starting point)."""
    from domainclip.demo import finding_masks
    from domainclip.evaluation.pointing import pointing_rate
    data = load_card_data("demo_pathology")
    positives, masks = finding_masks(data.root, data.splits["test"])
    masks, labels = torch.stack([torch.from_numpy(m) for m in masks]), torch.tensor([r.label for r in positives])
    predictor = domainclip.load_bundle(pathology_run.bundle_dir)
    zero_shot = predictor.model.zero_shot_start(seed=0)  # the run's seed
    pixels = predictor._pixels([r.path for r in positives])
    rate = {name: pointing_rate(model, pixels, labels, masks)
            for name, model in (("adapted", predictor.model), ("zero_shot", zero_shot))}
    assert len(positives) >= 70 and rate["adapted"] >= 0.8 and rate["adapted"] > rate["zero_shot"], rate


def test_report_gallery_shows_each_class_cases_with_maps_and_no_identifier(pathology_run):
    from PIL import Image

    d, data = pathology_run.run_dir, load_card_data("demo_pathology")
    cases = json.loads((d / "metrics.json").read_text())["gallery"]
    classes = data.class_names
    assert {c["class"] for c in cases} == set(classes)
    assert all(sum(c["class"] == k and c["kind"] == "most uncertain" for c in cases) == 1 for k in classes)
    summary = (d / "report" / "summary.md").read_text()
    for case in cases:
        assert f"]({case['file']})" in summary and Image.open(d / "report" / case["file"]).size[0] > 2 * 100
        assert (case["predicted"] == case["true"]) == (case["kind"] == "most confident correct") or case["kind"] == "most uncertain"
    groups = {r.group for recs in data.splits.values() for r in recs}
    names = " ".join(p.name for p in (d / "report").rglob("*")) + summary + json.dumps(cases)
    assert not any(g in names for g in groups) and not any(str(r.path.name) in names for r in data.splits["test"])


def test_gallery_picks_equal_a_brute_force_search():
    import numpy as np

    from domainclip.evaluation.gallery import KINDS, pick_cases

    rng = np.random.default_rng(3)
    probs = torch.from_numpy(rng.dirichlet(np.ones(4), size=60))
    targets = torch.from_numpy(rng.integers(0, 4, 60))
    got = {(k, kind): row for k, kind, row in pick_cases(probs, targets)}
    p, t = probs.numpy(), targets.numpy()
    for k in range(4):
        rows = [i for i in range(60) if t[i] == k]
        right = [i for i in rows if p[i].argmax() == k]
        wrong = [i for i in rows if p[i].argmax() != k]
        assert got.get((k, KINDS[0])) == (max(right, key=lambda i: p[i, k]) if right else None)
        assert got.get((k, KINDS[1])) == (max(wrong, key=lambda i: p[i].max()) if wrong else None)
        assert got[(k, KINDS[2])] == min(rows, key=lambda i: np.sort(p[i])[-1] - np.sort(p[i])[-2])
