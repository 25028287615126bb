"""``python -m domainclip.cards validate CARD``: exit 0 if the card is valid, 1 if not."""
from __future__ import annotations

import argparse
import sys

from domainclip.core.errors import USER_ERRORS, one_line
from domainclip.data.card_data import load_card_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domainclip.cards", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    val = sub.add_parser("validate", help="validate a data card and its manifest")
    val.add_argument("card", help="path to a card YAML or a shipped card name")
    args = parser.parse_args(argv)

    try:
        data = load_card_data(args.card)
    except USER_ERRORS as exc:
        print(f"invalid: {one_line(exc)}", file=sys.stderr)
        return 1
    n = sum(len(r) for r in data.splits.values())
    print(f"valid: {data.card.name} ({data.path}): {n} samples, {len(data.class_names)} classes, "
          f"split level {data.card.split.level}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
