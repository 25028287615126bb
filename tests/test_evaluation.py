"""Clinical evaluation: metrics against references, bootstrap coverage, val-only locking,
temperature scaling, group aggregation, periodic logging and the report."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from domainclip.evaluation.aggregate import aggregate_groups
from domainclip.evaluation.bootstrap import group_bootstrap_ci
from domainclip.evaluation.calibration import brier_score, expected_calibration_error, fit_temperature
from domainclip.evaluation.clinical import EvalSettings, Predictions, evaluate_model
from domainclip.evaluation.retrieval import retrieval_metrics
from domainclip.evaluation.scores import binary_auroc, ece, macro_auroc

RNG = np.random.default_rng(0)
P = RNG.dirichlet(np.ones(3), 300)
Y = RNG.integers(0, 3, 300)


def test_auroc_auprc_match_scikit_learn():
    from torchmetrics.functional.classification import multiclass_auroc, multiclass_average_precision

    pt, yt = torch.tensor(P, dtype=torch.float32), torch.tensor(Y)
    assert macro_auroc(P, Y) == pytest.approx(roc_auc_score(Y, P, multi_class="ovr"), abs=1e-9)
    per_class = multiclass_auroc(pt, yt, num_classes=3, average="none")
    for k in range(3):
        assert float(per_class[k]) == pytest.approx(roc_auc_score(Y == k, P[:, k]), abs=1e-5)
    ap = multiclass_average_precision(pt, yt, num_classes=3, average="none")
    for k in range(3):
        assert float(ap[k]) == pytest.approx(average_precision_score(Y == k, P[:, k]), abs=1e-5)


def test_ece_and_brier_match_reference_formulas():
    pt, yt = torch.tensor(P, dtype=torch.float32), torch.tensor(Y)
    conf, pred = P.max(1), P.argmax(1)
    ref = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ref += m.mean() * abs((pred[m] == Y[m]).mean() - conf[m].mean())
    assert expected_calibration_error(pt, yt) == pytest.approx(ref, abs=1e-6)
    assert ece(P, Y) == pytest.approx(ref, abs=1e-9)
    onehot = np.eye(3)[Y]
    assert brier_score(pt, yt) == pytest.approx(((P - onehot) ** 2).sum(1).mean(), abs=1e-6)
    binary = np.stack([1 - P[:, 0], P[:, 0]], 1)
    assert brier_score(torch.tensor(binary), torch.tensor((Y == 0).astype(int))) == pytest.approx(
        2 * brier_score_loss(Y == 0, P[:, 0]), abs=1e-9)


def simulate(rng, groups=40, per_group=6, d=1.0, sigma=0.7):
    """Scores with a per-group random effect; true AUROC = Phi(d / sqrt(2 (1 + sigma^2)))."""
    g = np.repeat(np.arange(groups), per_group)
    y = rng.integers(0, 2, g.size)
    s = rng.normal(0, sigma, groups)[g] + rng.normal(0, 1, g.size) + d * y
    return s, y, [str(x) for x in g], norm.cdf(d / math.sqrt(2 * (1 + sigma**2)))


def coverage(n_sims: int, n_resamples: int) -> float:
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(n_sims):
        s, y, g, truth = simulate(rng)
        lo, hi = group_bootstrap_ci(lambda idx: binary_auroc(s[idx], y[idx]), g, n_resamples, seed=int(rng.integers(1e9)))
        hits += lo <= truth <= hi
    return hits / n_sims


def test_group_bootstrap_covers_known_auroc_quick():
    assert coverage(40, 300) >= 0.85


@pytest.mark.slow
def test_group_bootstrap_covers_known_auroc_200_simulations():
    assert coverage(200, 1000) >= 0.90


def predictions(n=120, k=3, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g) + scale * torch.nn.functional.one_hot(y, k)
    return Predictions(logits, y, [f"p{i // 4}" for i in range(n)], [{"site": "A" if i % 2 else "B"} for i in range(n)])


def test_thresholds_and_temperature_come_from_validation_only():
    settings = EvalSettings(bootstrap=50, subgroups=["site"])
    val, test = predictions(seed=0), predictions(seed=1)
    first = evaluate_model(val, test, ["a", "b", "c"], settings)
    shuffled = Predictions(test.logits, test.targets[torch.randperm(len(test.targets))], test.groups, test.extra)
    second = evaluate_model(val, shuffled, ["a", "b", "c"], settings)
    assert first["thresholds"] == second["thresholds"] and first["temperature"] == second["temperature"]
    assert first["image_level"]["top1"] != second["image_level"]["top1"]  # test labels do change test metrics
    assert set(first["subgroups"]["site"]) == {"A", "B"} and first["subgroups"]["site"]["A"]["n"] == 60


def test_temperature_scaling_reduces_ece_of_an_overconfident_model():
    val, test = predictions(seed=2, scale=1.5), predictions(seed=3, scale=1.5)
    over_val = Predictions(val.logits * 5, val.targets, val.groups)
    over_test = Predictions(test.logits * 5, test.targets, test.groups)
    t = fit_temperature(over_val.logits, over_val.targets)
    assert t > 2.0
    before = expected_calibration_error(over_test.logits.softmax(-1), over_test.targets)
    after = expected_calibration_error((over_test.logits / t).softmax(-1), over_test.targets)
    assert after < before * 0.6


def test_group_aggregation_on_a_hand_made_case():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9]])
    targets = torch.tensor([0, 0, 1, 1, 1])
    groups = ["A", "A", "B", "B", "B"]
    p, y, ids = aggregate_groups(probs, targets, groups, "mean")
    assert ids == ["A", "B"] and y.tolist() == [0, 1]
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.25], [0.7 / 3, 2.3 / 3]]))
    p, _, _ = aggregate_groups(probs, targets, groups, "topk", topk=2)
    torch.testing.assert_close(p[1], torch.tensor([0.3, 0.85]) / 1.15)  # mean of top-2 per class, renormalised
    assert aggregate_groups(probs, torch.tensor([0, 1, 1, 1, 1]), groups) is None  # mixed labels in A


def test_any_slide_rule_labels_patients_and_scores_their_most_suspicious_slide():
    """eval.group_label=any:tumour against pandas: a patient has tumour when any slide does and is
    scored by the slide with the highest tumour probability; the patient AUROC is scikit-learn's."""
    import pandas as pd

    rng = np.random.default_rng(3)
    n, groups = 90, [f"P{i // 3}" for i in range(90)]  # three slides per patient
    y = torch.tensor(rng.random(n) < 0.3).long()
    p_tumour = np.clip(0.35 * y.numpy() + rng.uniform(0, 0.65, n), 0, 1)
    probs = torch.tensor(np.stack([1 - p_tumour, p_tumour], 1), dtype=torch.float32)
    assert aggregate_groups(probs, y, groups) is None  # slides of a patient disagree: unanimous has no label
    p, labels, ids = aggregate_groups(probs, y, groups, "mean", positive=1)
    frame = pd.DataFrame({"g": groups, "y": y.numpy(), "p": probs[:, 1].numpy()}).groupby("g", sort=False).max()
    assert ids == list(frame.index) and labels.tolist() == frame["y"].tolist()
    np.testing.assert_allclose(p[:, 1].numpy(), frame["p"].to_numpy())
    torch.testing.assert_close(p.sum(1), torch.ones(len(ids)))
    s = EvalSettings(bootstrap=0, group_label="any:tumour")
    report = evaluate_model(Predictions(probs.log(), y, groups), Predictions(probs.log(), y, groups),
                            ["normal", "tumour"], s, locked=(1.0, {"normal": 0.5, "tumour": 0.5}))
    assert report["group_level"]["n"] == 30 and report["group_level"]["group_label"] == "any:tumour"
    assert report["group_level"]["macro_auroc"] == pytest.approx(roc_auc_score(frame["y"], frame["p"]), abs=1e-6)


def test_retrieval_ranks():
    img = torch.eye(3)  # sims[i, j] = txt[j, i]; the positive ranks are 1, 3 and 2 both ways
    txt = torch.tensor([[1.0, 0.1, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 0.5]])
    out = retrieval_metrics(img, txt, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    for direction in ("image_to_text", "text_to_image"):
        assert out[direction]["R@1"] == pytest.approx(1 / 3) and out[direction]["R@5"] == 1.0
        assert out[direction]["median_rank"] == 2.0 and out[direction]["mean_rank"] == 2.0


def test_every_recipe_writes_the_full_report(make_cfg):
    from domainclip.pipeline.run import run

    result = run(make_cfg("recipe=radiology", "trainer.max_epochs=2", "tower.image.size=64", "eval.bootstrap=200",
                          "trainer.enable_progress_bar=false"))
    report = (result.run_dir / "report")
    for name in ("summary.md", "roc_pr.png", "reliability.png", "confusion.png"):
        assert (report / name).is_file(), name
    text = (report / "summary.md").read_text()
    for section in ("Clinical evaluation", "Per class", "Before vs after", "Calibration", "Subgroups", "VENDOR-X", "Retrieval",
                    "Data card digest", "split level **patient**"):
        assert section in text, section
    saved = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    assert saved["clinical"]["image_level"]["macro_auroc_ci"][0] <= saved["clinical"]["image_level"]["macro_auroc"]
    csv = (result.run_dir / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "periodic/zero_shot_top1" in csv and "periodic/method_macro_auroc" in csv


MULTI = {"tumour": "nuclei|crowded", "lymphocytes": "nuclei|crowded", "stroma": "nuclei|fibres", "adipose": "fat"}


def test_multi_label_card_gets_the_clinical_report_and_a_loadable_bundle(make_cfg, tmp_path):
    import csv

    import yaml

    import domainclip
    from domainclip.demo import demo_root
    from domainclip.pipeline.run import run

    root = demo_root("pathology")
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    (root / "multilabel.csv").write_text("path,labels,slide_id\n" + "".join(
        f"{r['path']},{MULTI[r['label']]},{r['slide_id']}\n" for r in rows))
    card = {"name": "demo_multilabel", "modality": "pathology", "demo": "pathology", "license": "CC0-1.0",
            "reader": {"name": "tiles"}, "manifest": "multilabel.csv", "task": "multi_label",
            "columns": {"path": "path", "label": "labels", "group": "slide_id"},
            "classes": [{"name": n, "description": f"{n} in the tissue"} for n in ("nuclei", "crowded", "fibres", "fat")],
            "split": {"level": "slide", "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    result = run(make_cfg(f"data.card={tmp_path / 'card.yaml'}", "trainer.max_epochs=3", "tower.image.size=64",
                          "eval.bootstrap=100", "trainer.enable_progress_bar=false"))
    clinical = result.metrics["clinical"]
    assert clinical["multi_label"] and set(clinical["operating_points"]) == {"nuclei", "crowded", "fibres", "fat"}
    assert 0 <= clinical["image_level"]["macro_auroc_ci"][0] <= clinical["image_level"]["macro_auroc_ci"][1] <= 1
    assert (result.run_dir / "report" / "roc_pr.png").is_file()
    probs = domainclip.load_bundle(result.bundle_dir).predict(torch.randn(2, 3, 64, 64))
    assert probs.shape == (2, 4) and not torch.allclose(probs.sum(-1), torch.ones(2))  # independent per class
    gallery = json.loads((result.run_dir / "metrics.json").read_text())["gallery"]  # per finding, with maps
    assert {c["class"] for c in gallery} == {"nuclei", "crowded", "fibres", "fat"}
    for case in gallery:
        assert (result.run_dir / "report" / case["file"]).is_file() and case["true"].startswith(case["class"])
        if case["kind"] == "most confident correct":
            assert case["predicted"] == case["true"] == f"{case['class']} present"
        elif case["kind"] == "most confident wrong":
            assert case["predicted"] != case["true"]


def test_multi_label_gallery_picks_equal_a_brute_force_search():
    import numpy as np

    from domainclip.evaluation.gallery import KINDS, pick_label_cases

    rng = np.random.default_rng(4)
    p, y, t = rng.random((50, 3)), rng.integers(0, 2, (50, 3)), [0.3, 0.5, 0.7]
    got = {(k, kind): row for k, kind, row in pick_label_cases(torch.from_numpy(p), torch.from_numpy(y), t)}
    for k in range(3):
        right = [i for i in range(50) if y[i, k] and p[i, k] >= t[k]]
        wrong = [i for i in range(50) if (p[i, k] >= t[k]) != bool(y[i, k])]
        assert got[(k, KINDS[0])] == max(right, key=lambda i: p[i, k])
        assert got[(k, KINDS[1])] == max(wrong, key=lambda i: abs(p[i, k] - t[k]))
        assert got[(k, KINDS[2])] == min(range(50), key=lambda i: abs(p[i, k] - t[k]))


def test_independent_site_bootstrap_resamples_each_site_on_its_own():
    from domainclip.evaluation.bootstrap import independent_bootstrap

    rng = np.random.default_rng(0)
    correct_a = (rng.random(200) < 0.9).astype(float)
    correct_b = (rng.random(120) < 0.7).astype(float)
    groups_a, groups_b = [f"a{i // 4}" for i in range(200)], [f"b{i // 4}" for i in range(120)]
    shifted = independent_bootstrap(lambda i: correct_a[i].mean(), groups_a, lambda i: correct_b[i].mean(), groups_b, 500)
    assert shifted["difference"] == pytest.approx(correct_b.mean() - correct_a.mean())
    assert shifted["ci"][1] < 0 and shifted["p_value_two_sided"] < 0.01
    same = independent_bootstrap(lambda i: correct_a[i].mean(), groups_a, lambda i: correct_a[i].mean(), groups_a, 500)
    assert same["difference"] == 0 and same["ci"][0] < 0 < same["ci"][1]  # independent draws: a real spread
    # the spread matches the sum of the two sites' own bootstrap variances
    from domainclip.evaluation.bootstrap import group_bootstrap_ci
    lo_a, hi_a = group_bootstrap_ci(lambda i: correct_a[i].mean(), groups_a, 500)
    assert (same["ci"][1] - same["ci"][0]) == pytest.approx(np.sqrt(2) * (hi_a - lo_a), rel=0.25)
