"""Shards vs original files: samples/s per core reading the radiology demo study from WebDataset
shards (stored float16, ready for the tower) vs decoding the same images from JPEG 2000
compressed DICOM files through the reader, window and resize (one thread, one run).

    python benchmarks/shards.py
    python benchmarks/shards.py --smoke

Target: shards / compressed DICOM >= 10.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_rate, machine, write_result  # noqa: E402


def compressed_card(out: Path, limit: int) -> Path:
    """The demo radiology card with its DICOMs at a clinical CT matrix (512 x 512, the 128 x 128
    demo slices upsampled 4x) re-encoded as JPEG 2000 (lossless) in ``out``."""
    import numpy as np
    import pydicom
    import yaml
    from pydicom.uid import JPEG2000Lossless

    from domainclip.data import load_card_data

    data = load_card_data("demo_radiology")
    lines = data.root.joinpath("manifest.csv").read_text().splitlines()
    keep = [lines[0]] + lines[1 : limit + 1]
    for line in keep[1:]:
        rel = line.split(",")[0]
        ds = pydicom.dcmread(data.root / rel)
        big = np.kron(ds.pixel_array, np.ones((4, 4), dtype=ds.pixel_array.dtype))
        ds.Rows, ds.Columns = big.shape
        ds.compress(JPEG2000Lossless, big)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out / rel)
    (out / "manifest.csv").write_text("\n".join(keep) + "\n")
    card = yaml.safe_load(data.path.read_text())
    card.pop("demo")
    card["name"] = "demo_radiology_j2k"
    card["split"]["fractions"] = {"train": 1.0}
    (out / "card.yaml").write_text(yaml.safe_dump(card))
    return out / "card.yaml"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.files, args.repeats = 8, 1
    torch.set_num_threads(1)  # per core
    from domainclip.data import ImageDataset, load_card_data
    from domainclip.shards import ShardStream, build_shards, load_manifest
    from domainclip.transforms.pipeline import DomainOptions, Preprocess

    tmp = Path(tempfile.mkdtemp(prefix="shards-bench-"))
    card = compressed_card(tmp / "data", args.files)
    build_shards(str(card), tmp / "shards", size=224)
    data = load_card_data(str(card))
    records = data.splits["train"]
    pre = Preprocess(size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    files = ImageDataset(records, data.card.reader.name, data.card.reader.options,
                         DomainOptions.from_dict(data.card.transforms), pre, len(data.card.classes))
    manifest = load_manifest(tmp / "shards")
    shards = ShardStream(tmp / "shards", manifest, "train", pre.mean, pre.std, len(data.card.classes))
    n = len(records)
    rates = {"compressed_dicom": best_rate(lambda: [files[i] for i in range(n)], n, args.repeats),
             "shards": best_rate(lambda: list(shards), n, args.repeats)}
    result = {"samples": n, "transfer_syntax": "JPEG 2000 Lossless", "samples_per_s_per_core": rates,
              "ratio": rates["shards"] / rates["compressed_dicom"],
              "shard_bytes": sum(s["bytes"] for s in manifest["splits"]["train"]["shards"])}
    shutil.rmtree(tmp, ignore_errors=True)
    write_result("shards", result, args.out)
    print(f"machine: {machine()}; {n} CT images 512 x 512, one thread")
    print(f"compressed DICOM (J2K) -> tensor: {rates['compressed_dicom']:.0f} samples/s; shards -> tensor: "
          f"{rates['shards']:.0f} samples/s; ratio {result['ratio']:.1f} (target >= 10)")


if __name__ == "__main__":
    main()
