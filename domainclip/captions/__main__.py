"""Caption tools for a data card.

  python -m domainclip.captions preview CARD [--n 3]
  python -m domainclip.captions export-review CARD [--out FILE] [--llm DIR]
  python -m domainclip.captions import-review CARD FILE
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from domainclip.captions.build import prepare_captions
from domainclip.captions.review import export_review, import_review, load_approved
from domainclip.cards import load_card
from domainclip.core.errors import USER_ERRORS, one_line
from domainclip.data.card_data import load_card_data


def _bank(args):
    data = load_card_data(args.card)
    llm = {"path": args.llm, "n": args.llm_n, "seed": args.seed} if getattr(args, "llm", None) else None
    return data, *prepare_captions(data, llm=llm)


def preview(args) -> int:
    data, bank, report = _bank(args)
    print(f"{data.card.name}: template set {report['template_set']}, {report['captions']} distinct captions")
    for k, name in enumerate(data.class_names):
        print(f"\n[{name}]")
        pool = next((p for p, labels in zip(bank.pools, _pool_labels(data, bank)) if labels == (k,)), bank.class_prompts[k])
        for row in pool[: args.n]:
            print(f"  - {bank.texts[row]}  ({bank.provenance[row]['source']})")
    return 0


def _pool_labels(data, bank) -> list[tuple]:
    labels = [None] * len(bank.pools)
    for split, ids in bank.pool_ids.items():
        for rec, pid in zip(data.splits[split], ids):
            labels[pid] = rec.labels
    return labels


def export(args) -> int:
    data, bank, _ = _bank(args)
    out = Path(args.out or f"{data.card.name}.captions-review.csv")
    n = export_review(bank, data.class_names, out, load_approved(data.card.name))
    print(f"wrote {n} captions to {out}; mark the 'approved' column (yes/no) and run import-review")
    return 0


def import_(args) -> int:
    card, _ = load_card(args.card)
    approved, total = import_review(card.name, Path(args.file))
    print(f"{card.name}: {approved} of {total} captions approved")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domainclip.captions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("preview", preview), ("export-review", export)):
        p = sub.add_parser(name)
        p.add_argument("card")
        p.add_argument("--n", type=int, default=3, help="captions shown per class (preview)")
        p.add_argument("--out", help="CSV to write (export-review)")
        p.add_argument("--llm", help="local causal LM directory for caption expansion")
        p.add_argument("--llm-n", type=int, default=5)
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(fn=fn)
    p = sub.add_parser("import-review")
    p.add_argument("card")
    p.add_argument("file")
    p.set_defaults(fn=import_)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (*USER_ERRORS, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
