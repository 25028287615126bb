"""DICOM read -> window -> resize throughput per core: domainclip's dataset pipeline vs MONAI
(``LoadImage(reader="PydicomReader")`` + ``ScaleIntensityRange`` + ``Resize``) vs bare
``pydicom.dcmread(f).pixel_array`` (the decode floor), on the same files, one thread, one run.

    python benchmarks/dicom_pipeline.py          # the demo CT study (uncompressed) + pydicom's CT/MR test files
    python benchmarks/dicom_pipeline.py --smoke

Targets: domainclip / MONAI >= 5; domainclip / bare decode >= 0.5.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_rate, machine, write_result  # noqa: E402

LUNG = (-600.0, 1500.0)  # the demo card's window: level, width
SIZE = 224


def files(limit: int) -> list[Path]:
    from domainclip.data import load_card_data

    data = load_card_data("demo_radiology")
    return [r.path for recs in data.splits.values() for r in recs][:limit]


def domainclip_pipeline(paths):
    """The training pipeline itself: reader (modality LUT, window) + model_input (resize, normalise)."""
    from domainclip.readers import read
    from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input

    domain, pre = DomainOptions.from_dict({}), Preprocess(size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    return lambda: [model_input(*read(p, reader="dicom", window="lung"), domain, pre) for p in paths]


def monai_pipeline(paths):
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensityRange

    level, width = LUNG
    chain = Compose([LoadImage(reader="PydicomReader", image_only=True), EnsureChannelFirst(),
                     ScaleIntensityRange(a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True),
                     Resize((SIZE, SIZE))])
    return lambda: [chain(str(p)) for p in paths]


def bare_decode(paths):
    import pydicom

    return lambda: [pydicom.dcmread(p).pixel_array for p in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.files, args.repeats = 8, 1
    import torch

    torch.set_num_threads(1)  # per core
    paths = files(args.files)
    rates = {name: best_rate(make(paths), len(paths), args.repeats)
             for name, make in (("domainclip", domainclip_pipeline), ("monai", monai_pipeline), ("bare_decode", bare_decode))}
    result = {"files": len(paths), "files_per_s_per_core": rates,
              "domainclip_over_monai": rates["domainclip"] / rates["monai"],
              "domainclip_over_bare_decode": rates["domainclip"] / rates["bare_decode"]}
    write_result("dicom_pipeline", result, args.out)
    print(f"machine: {machine()}; {len(paths)} CT files (uncompressed), one thread")
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} files/s")
    print(f"domainclip / MONAI: {result['domainclip_over_monai']:.2f} (target >= 5)")
    print(f"domainclip / bare decode: {result['domainclip_over_bare_decode']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
