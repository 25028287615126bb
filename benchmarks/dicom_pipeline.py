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
# real uncompressed files of pydicom-data: CR 1955x1841, MR 1024x1024, CR 1760x1760, CT 128x128
REAL = ["RG1_UNCI.dcm", "MR2_UNCI.dcm", "RG3_UNCI.dcm", "CT_small.dcm"]


def files(limit: int) -> list[tuple[Path, tuple[float, float]]]:
    """(path, (level, width)) pairs: the real files (window = their value range), then the demo CT study."""
    import pydicom
    from pydicom.data import get_testdata_file

    from domainclip.data import load_card_data
    from domainclip.readers.dicom import modality_values

    out = []
    for name in REAL:
        path = Path(get_testdata_file(name))
        ds = pydicom.dcmread(path)
        values = modality_values(ds.pixel_array, ds)
        lo, hi = float(values.min()), float(values.max())
        out.append((path, ((lo + hi) / 2, hi - lo)))
    data = load_card_data("demo_radiology")
    out += [(r.path, LUNG) for recs in data.splits.values() for r in recs]
    return out[:limit]


def domainclip_pipeline(items):
    """The training pipeline itself: reader (modality LUT, window) + model_input (resize, normalise)."""
    from domainclip.readers import read
    from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input

    domain, pre = DomainOptions.from_dict({}), Preprocess(size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)
    return lambda: [model_input(*read(p, reader="dicom", window=list(w)), domain, pre) for p, w in items]


def monai_pipeline(items):
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensityRange

    chains = {w: Compose([LoadImage(reader="PydicomReader", image_only=True), EnsureChannelFirst(),
                          ScaleIntensityRange(a_min=w[0] - w[1] / 2, a_max=w[0] + w[1] / 2, b_min=0.0, b_max=1.0, clip=True),
                          Resize((SIZE, SIZE))]) for _, w in items}
    return lambda: [chains[w](str(p)) for p, w in items]


def bare_decode(items):
    import pydicom

    return lambda: [pydicom.dcmread(p).pixel_array for p, _ in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=244)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.files, args.repeats = 6, 1
    import torch

    torch.set_num_threads(1)  # per core
    paths = files(args.files)
    per_group = {"real CR/MR/CT (pydicom-data)": paths[: len(REAL)], "demo CT 128x128": paths[len(REAL):]}
    groups = {g: {n: best_rate(m(items), len(items), args.repeats) for n, m in
                  (("domainclip", domainclip_pipeline), ("monai", monai_pipeline), ("bare_decode", bare_decode))}
              for g, items in per_group.items() if items}
    rates = {name: best_rate(make(paths), len(paths), args.repeats)
             for name, make in (("domainclip", domainclip_pipeline), ("monai", monai_pipeline), ("bare_decode", bare_decode))}
    result = {"files": len(paths), "files_per_s_per_core": rates,
              "domainclip_over_monai": rates["domainclip"] / rates["monai"],
              "domainclip_over_bare_decode": rates["domainclip"] / rates["bare_decode"],
              "by_file_group": {g: {**r, "domainclip_over_monai": r["domainclip"] / r["monai"],
                                    "domainclip_over_bare_decode": r["domainclip"] / r["bare_decode"]} for g, r in groups.items()}}
    write_result("dicom_pipeline", result, args.out)
    print(f"machine: {machine()}; {len(paths)} uncompressed DICOM files, one thread")
    for g, r in result["by_file_group"].items():
        print(f"  {g}: domainclip / MONAI {r['domainclip_over_monai']:.2f}, domainclip / bare decode "
              f"{r['domainclip_over_bare_decode']:.2f}")
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} files/s")
    print(f"domainclip / MONAI: {result['domainclip_over_monai']:.2f} (target >= 5)")
    print(f"domainclip / bare decode: {result['domainclip_over_bare_decode']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
