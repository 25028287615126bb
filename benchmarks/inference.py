"""Inference: ``load_bundle(...).predict`` throughput vs the bare image-tower forward
(``tower.encode_image`` under ``torch.inference_mode``) on the same preprocessed batch, and the
cost of the maps (``explain``: probability maps) over ``predict`` on the bundle (EfficientNet
default), and of similarity maps over logits on a ViT-B/16 CLIP (random weights; MaskCLIP's value
path in the last block). Each figure is the best of ``--repeats`` rounds in which the compared
calls run in turn (``common.interleaved_rates``), so a slow spell of the machine hits them alike.

    python benchmarks/inference.py          # bundle of a 1-epoch LoRA run of recipe=pathology, batch 32
    python benchmarks/inference.py --smoke

Targets: predict / bare forward >= 0.95; explain time / predict time <= 2.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_rates, machine, toy_batch, vit_b16_clip_dir, write_result  # noqa: E402


def make_bundle(out: Path, smoke: bool = False) -> Path:
    """The bundle of a 1-epoch LoRA run of recipe=pathology (the smoke's at 64 px)."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    overrides = ["recipe=pathology", "trainer.max_epochs=1", "eval.bootstrap=0", "trainer.enable_progress_bar=false",
                 f"run_dir={out}", *(["tower.image.size=64"] if smoke else [])]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg).bundle_dir


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.repeats = 4, 1
    from domainclip import load_bundle

    predictor = load_bundle(make_bundle(Path(tempfile.mkdtemp(prefix="bundle-")), args.smoke))
    pixels = toy_batch(args.batch, predictor.preprocess.size)["pixels"]

    def bare():
        with torch.inference_mode():
            predictor.tower.encode_image(pixels)

    rates = interleaved_rates({"predict": lambda: predictor.predict(pixels), "bare_forward": bare,
                               "explain": lambda: predictor.explain(pixels)}, args.batch, args.repeats)
    vit = vit_maps_cost(args)
    result = {"batch": args.batch, "images_per_s": rates, "ratio": rates["predict"] / rates["bare_forward"],
              "explain_cost_over_predict": {"embedded_bundle": rates["predict"] / rates["explain"],
                                            "vit_b16_clip": vit}}
    write_result("inference", result, args.out)
    print(f"machine: {machine()}; batch {args.batch}")
    print(f"predict {rates['predict']:.1f} images/s, bare tower forward {rates['bare_forward']:.1f} images/s, "
          f"ratio {result['ratio']:.3f} (target >= 0.95)")
    for name, cost in result["explain_cost_over_predict"].items():
        print(f"maps (explain), {name}: {cost:.2f}x the time of predict (target <= 2)")


def vit_maps_cost(args) -> float:
    """Time of ``similarity_maps`` over the time of ``logits`` for a ViT-B/16 CLIP, same batch."""
    import torch

    from domainclip.model import AdaptedModel

    layers, size = (1, 32) if args.smoke else (12, 224)
    path = vit_b16_clip_dir(Path(tempfile.mkdtemp(prefix="vitb16-")), layers, size)
    model = AdaptedModel.build({"name": "hf_clip", "path": str(path)}, {"name": "zero_shot"}, ["a", "b"],
                               ["a photo of a.", "a photo of b."], [0, 1]).eval()
    pixels = toy_batch(args.batch, size)["pixels"]
    classes = model.fixed_class_embeddings()

    def under_inference(fn):
        def call():
            with torch.inference_mode():
                fn()
        return call

    rates = interleaved_rates({"logits": under_inference(lambda: model.logits(pixels, class_embeddings=classes)),
                               "maps": under_inference(lambda: model.similarity_maps(pixels, class_embeddings=classes))},
                              args.batch, args.repeats)
    return rates["logits"] / rates["maps"]


if __name__ == "__main__":
    main()
