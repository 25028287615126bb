"""The pointing game on the demos (Zhang et al., ECCV 2016): the share of positive test images
whose map for their labelled class peaks inside the region the generator drew for that class, for
the adapted model of each recipe's default run and its zero-shot starting point, by the maps
``explain`` shows (the class's probability at each location) and by plain similarity maps; a
random point (the mean share of the image the class covers); the best any map of the model's
resolution could do (its feature grid, upsampled: ``pointing_upper_bound``); and what the tower's
own per-location features allow when the masks themselves are the training labels (a logistic
regression on the train split's locations, labelled by the masks: a reference for how far the
frozen features localise, which labels per image rather than per pixel are not expected to pass
by much).

    python benchmarks/pointing.py                          # recipes pathology radiology satellite
    python benchmarks/pointing.py --recipes pathology
    python benchmarks/pointing.py --smoke
    python benchmarks/pointing.py --recipes radiology -- method.sides=[image,text]   # any run overrides

Targets: adapted >= 0.80 and above zero-shot, per recipe.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402


def recipe_run(recipe: str, extra: list[str]):
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    out = Path(tempfile.mkdtemp(prefix=f"pointing-{recipe}-"))
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"recipe={recipe}", f"run_dir={out}", "trainer.enable_progress_bar=false",
                                           *extra])
    return run(cfg)


def pointing(recipe: str, extra: list[str], tolerance: int = 0) -> dict:
    """The rates for one recipe's default run (test split)."""
    import torch

    from domainclip import load_bundle
    from domainclip.data import load_card_data
    from domainclip.demo import finding_masks
    from domainclip.evaluation.pointing import pointing_rate, pointing_upper_bound

    result = recipe_run(recipe, extra)
    data = load_card_data(f"demo_{recipe}")
    records, masks = finding_masks(data.root, data.splits["test"])
    predictor = load_bundle(result.bundle_dir)
    start = predictor.model.zero_shot_start(seed=0)  # the run's seed: the model it started from
    pixels = predictor._pixels([r.path for r in records])
    labels, masks_t = torch.tensor([r.label for r in records]), torch.stack([torch.from_numpy(m) for m in masks])
    with torch.inference_mode():
        grid = tuple(predictor.model.tower.dense_features(pixels[:1]).shape[1:3])
    rates = {f"{name}{suffix}": pointing_rate(model, pixels, labels, masks_t, tolerance=tolerance, score=score)
             for name, model in (("adapted", predictor.model), ("zero_shot", start))
             for suffix, score in (("", "probability"), ("_similarity", "similarity"))}
    return {"positives": len(records), "of": len(data.splits["test"]), "grid": list(grid), **rates,
            "grid_upper_bound": pointing_upper_bound(grid, masks_t, tuple(pixels.shape[-2:]), tolerance),
            "mask_supervised": mask_supervised_rate(predictor, data, pixels, labels, masks_t, tolerance),
            "random_point": float(sum(m.mean() for m in masks) / len(masks))}


def mask_supervised_rate(predictor, data, pixels, labels, masks, tolerance: int) -> float:
    """The pointing rate of a per-location classifier fitted with the masks as labels: each
    location of the tower's feature grid on the train split is labelled by the class that covers
    most of its cell (at least 5%), else background, and a logistic regression (scikit-learn) on
    the normalised features maps the test images. Meaningful for recipes whose image tower is
    frozen (the default LoRA adapts the text side)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression

    from domainclip.demo import finding_masks
    from domainclip.evaluation.pointing import pointing_hits

    tower, k = predictor.model.tower, len(data.class_names)

    def features(px):
        with torch.inference_mode():
            dense = torch.cat([tower.dense_features(px[i : i + 32]) for i in range(0, len(px), 32)])
        return F.normalize(dense.float(), dim=-1)

    train, train_masks = finding_masks(data.root, data.splits["train"])
    train_feats = features(predictor._pixels([r.path for r in train]))
    cover = torch.stack([torch.from_numpy(m) for m in train_masks]).float()[:, None]
    share = F.adaptive_avg_pool2d(cover, train_feats.shape[1:3])[:, 0]  # the labelled class's share of each cell
    cell_labels = torch.where(share >= 0.05, torch.tensor([r.label for r in train])[:, None, None], k)
    fit = LogisticRegression(max_iter=2000).fit(train_feats.flatten(0, 2).numpy(), cell_labels.flatten().numpy())
    test_feats = features(pixels)
    probs = fit.predict_proba(test_feats.flatten(0, 2).numpy())
    full = np.zeros((len(probs), k + 1))
    full[:, fit.classes_] = probs
    grid = torch.from_numpy(full).float().view(*test_feats.shape[:3], k + 1).permute(0, 3, 1, 2)
    maps = F.interpolate(grid, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
    own = maps[torch.arange(len(maps)), labels]
    return pointing_hits(own, masks, tolerance).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["pathology", "radiology", "satellite"])
    ap.add_argument("--tolerance", type=int, default=0, help="pixels (at the model's input size) a hit may miss by")
    ap.add_argument("--smoke", action="store_true", help="pathology at 64 px, one epoch, no bootstrap")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --), e.g. tower.image.size=448")
    args = ap.parse_args()
    smoke = ["trainer.max_epochs=1", "eval.bootstrap=0", "eval.external_cards=[]", "tower.image.size=64"]
    extra = (smoke if args.smoke else []) + args.overrides
    recipes = ["pathology"] if args.smoke else args.recipes
    results = {r: pointing(r, extra, args.tolerance) for r in recipes}
    write_result("pointing", {"tolerance_px": args.tolerance, "overrides": args.overrides, "recipes": results}, args.out)
    print(f"machine: {machine()}")
    for recipe, r in results.items():
        print(f"recipe={recipe}: pointing game on {r['positives']} of {r['of']} test images: adapted {r['adapted']:.3f} "
              f"(target >= 0.80 and > zero-shot), zero-shot {r['zero_shot']:.3f}; similarity maps: adapted "
              f"{r['adapted_similarity']:.3f}, zero-shot {r['zero_shot_similarity']:.3f}; random point "
              f"{r['random_point']:.3f}; best any {r['grid'][0]} x {r['grid'][1]} map can do {r['grid_upper_bound']:.3f}; "
              f"trained on the masks {r['mask_supervised']:.3f}")


if __name__ == "__main__":
    main()
