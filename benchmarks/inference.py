"""Inference: ``load_bundle(...).predict`` throughput vs the bare image-tower forward
(``tower.encode_image`` under ``torch.inference_mode``) on the same preprocessed batch.

    python benchmarks/inference.py          # bundle of a 1-epoch LoRA run of recipe=pathology, batch 32
    python benchmarks/inference.py --smoke

Target: predict / bare forward >= 0.95.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_rate, machine, toy_batch, write_result  # noqa: E402


def make_bundle(out: Path) -> Path:
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import run

    overrides = ["recipe=pathology", "trainer.max_epochs=1", "eval.bootstrap=0", "trainer.enable_progress_bar=false",
                 f"run_dir={out}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg).bundle_dir


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.repeats = 4, 1
    from domainclip import load_bundle

    predictor = load_bundle(make_bundle(Path(tempfile.mkdtemp(prefix="bundle-"))))
    pixels = toy_batch(args.batch, predictor.preprocess.size)["pixels"]

    def bare():
        with torch.inference_mode():
            predictor.tower.encode_image(pixels)

    rates = {"predict": best_rate(lambda: predictor.predict(pixels), args.batch, args.repeats),
             "bare_forward": best_rate(bare, args.batch, args.repeats)}
    result = {"batch": args.batch, "images_per_s": rates, "ratio": rates["predict"] / rates["bare_forward"]}
    write_result("inference", result, args.out)
    print(f"machine: {machine()}; batch {args.batch}")
    print(f"predict {rates['predict']:.1f} images/s, bare tower forward {rates['bare_forward']:.1f} images/s, "
          f"ratio {result['ratio']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
