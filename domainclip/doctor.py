"""``python -m domainclip.doctor CARD``: preflight a data card before any training.

Reports files per reader and transfer syntax, which DICOM decoders are installed, unreadable
files, class counts per split and group leakage. Exits 1 when it finds a problem.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from domainclip.core.errors import DomainClipError
from domainclip.data.card_data import load_card_data
from domainclip.data.preflight import find_unreadable


def transfer_syntaxes(paths) -> Counter:
    """Count DICOM transfer syntaxes (headers only)."""
    import pydicom

    out = Counter()
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            out[ds.file_meta.TransferSyntaxUID] += 1
        except Exception:  # noqa: BLE001 - unreadable headers are reported by the read check
            out["unreadable header"] += 1
    return out


def decoder_status(uid) -> str:
    """Which installed plug-ins can decode a transfer syntax, or what to install."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return "no decoder exists in pydicom"
    if decoder.is_native:
        return "decodable (native, no plug-in needed)"
    if decoder.is_available:
        return "decodable with: " + ", ".join(sorted(decoder.available_plugins))
    return "NOT decodable; missing: " + "; ".join(decoder.missing_dependencies)


def diagnose(card_ref: str) -> list[str]:
    """Print the report; return the list of problems found."""

    problems = []
    try:
        data = load_card_data(card_ref)  # validates card, manifest and leakage
    except DomainClipError as exc:
        print(f"card: INVALID\n  {exc}")
        return [str(exc)]
    card, recs = data.card, [r for rs in data.splits.values() for r in rs]
    print(f"card: {card.name} ({data.path}) valid; split level {card.split.level}; no group crosses splits")
    print(f"files: {len({r.path for r in recs})} read by '{card.reader.name}' ({len(recs)} samples)")
    if card.reader.name == "dicom":
        for uid, n in transfer_syntaxes(sorted({r.path for r in recs})).items():
            status = decoder_status(uid) if uid != "unreadable header" else ""
            print(f"  {getattr(uid, 'name', uid)}: {n} file(s) {status}")
            if status.startswith("NOT") or status.startswith("no decoder"):
                problems.append(f"{uid}: {status}")
    bad = find_unreadable(recs, card.reader.name, card.reader.options)
    print(f"unreadable: {len(bad)}")
    for b in bad:
        print(f"  - {b['error']}")
        problems.append(b["path"])
    print("class counts per split:")
    for split, counts in data.counts().items():
        print(f"  {split}: {counts}")
        empty = [c for c, n in counts.items() if n == 0]
        if empty:  # training needs every class; evaluation on val/test crashes or says nothing without it
            problems.append(f"no {split} samples for {empty}")
            print(f"  ! no {split} samples for {empty}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domainclip.doctor", description=__doc__)
    parser.add_argument("card", help="path to a card YAML or a shipped card name")
    problems = diagnose(parser.parse_args(argv).card)
    print("OK" if not problems else f"{len(problems)} problem(s) found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
