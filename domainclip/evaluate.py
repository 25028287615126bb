"""``python -m domainclip.evaluate bundle=PATH card=PATH [split=test|all] [out=DIR] [base=DIR]``

Evaluates an exported bundle on a data card (e.g. an external site's) with no training code
path: the bundle's own reader settings, preprocessing, prompts and temperature. ``base=DIR`` gives
the base model's directory when this machine did not train the bundle.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from domainclip import load_bundle
from domainclip.core.errors import USER_ERRORS, DomainClipError, one_line
from domainclip.core.fileio import atomic_write_text
from domainclip.data import load_card_data
from domainclip.evaluation.clinical import EvalSettings, Predictions
from domainclip.evaluation.evaluators import evaluator_for
from domainclip.evaluation.report import _ci, conformal_lines


def bundle_logits(predictor, records, batch_size: int = 64) -> torch.Tensor:
    """Uncalibrated logits of the bundle for every record (one per slide for slide-level bundles),
    batched."""
    if predictor.slide_level:
        return torch.stack([p["logits"] for p in predictor.predict_slides([r.path for r in records], batch_size)])
    out = []
    for i in range(0, len(records), batch_size):
        pixels = torch.stack([predictor.load_record(r) for r in records[i : i + batch_size]])
        out.append(predictor.raw_logits(pixels))
    return torch.cat(out)


def evaluate_bundle(bundle: str | Path, card: str | Path, split: str = "test", base: str | None = None) -> dict:
    """Metrics of ``bundle`` on ``card``'s split (``all`` = every record). Temperature and
    operating points are the bundle's, locked on its own validation split; nothing is refitted."""

    predictor = load_bundle(bundle, base=base)
    data = load_card_data(card, on_error="fail")
    if data.class_names != predictor.classes:
        raise DomainClipError(f"the card's classes {data.class_names} differ from the bundle's {predictor.classes}; "
                              "list the same classes in the same order")
    if predictor.slide_level != (data.card.label_level == "slide"):
        raise DomainClipError(f"{card}: label_level '{data.card.label_level}' does not match the bundle, which scores "
                              f"{'whole slides' if predictor.slide_level else 'images'}; use a card labelled the same way")
    records = [r for recs in data.splits.values() for r in recs] if split == "all" else data.splits.get(split, [])
    if not records:
        raise DomainClipError(f"split '{split}' of {card} is empty")
    logits = bundle_logits(predictor, records)
    result = {"bundle": str(bundle), "card": data.card.name, "card_digest": data.digest, "split": split}
    meta = predictor.meta
    evaluator = evaluator_for(data.card.task)
    clinical = meta["metrics"].get("clinical") or {}
    if not (meta.get("thresholds") or clinical.get("thresholds")):
        raise DomainClipError(f"{bundle}: the bundle has no locked thresholds; re-export it from a run with val and test")
    settings = EvalSettings(**{k: v for k, v in meta.get("eval_settings", {}).items()
                               if k in EvalSettings.__dataclass_fields__})
    settings.subgroups = list(data.card.subgroups)
    targets = record_targets(records, data.card.task, len(data.class_names))
    test = Predictions(logits, targets, [r.group for r in records],
                       [{c: r.extra.get(c) for c in data.card.subgroups} for r in records])
    locked = {**clinical, "temperature": float(meta.get("temperature", 1.0)), "thresholds": meta.get("thresholds") or {},
              "conformal": meta.get("conformal")}
    return {**result, "metrics": evaluator.split_metrics(logits, targets, data.class_names),
            "clinical": evaluator.clinical(None, test, data.class_names, settings, locked_from=locked)}


def record_targets(records, task: str, n_classes: int) -> torch.Tensor:
    """Class indices (single-label) or multi-hot rows (multi-label) of card records."""
    if task == "multi_label":
        return torch.stack([torch.zeros(n_classes).index_fill_(0, torch.tensor(r.labels), 1.0) for r in records])
    return torch.tensor([r.label for r in records])


SPLITS = ("train", "val", "test", "all")
KEYS = ("bundle", "card", "split", "out", "base")


def parse_args(argv: list[str]) -> dict:
    """``key=value`` arguments, checked before any work: known keys, the required ones, a split
    that exists, an ``out`` that is (or can be) a folder. A problem is a ``DomainClipError`` line."""
    loose = [a for a in argv if "=" not in a]
    if loose:
        raise DomainClipError(f"arguments are key=value, got {loose}; e.g. bundle={loose[0]}. {USAGE}")
    args = dict(a.split("=", 1) for a in argv)
    unknown, missing = sorted(set(args) - set(KEYS)), [k for k in ("bundle", "card") if not args.get(k)]
    if unknown or missing:
        raise DomainClipError(f"unknown key(s) {unknown} / missing {missing}. {USAGE}")
    if args.get("split", "test") not in SPLITS:
        raise DomainClipError(f"split={args['split']} is not one of {list(SPLITS)}")
    out = Path(args["out"]) if args.get("out") else None
    if out is not None and out.exists() and not out.is_dir():
        raise DomainClipError(f"out={out} is an existing file; name a folder (metrics.json is written inside it)")
    return args


USAGE = "usage: python -m domainclip.evaluate bundle=PATH card=PATH [split=test|val|train|all] [out=DIR] [base=DIR]"


def main(argv: list[str] | None = None) -> int:
    """Command line: one line and exit 2 for bad arguments, 1 for a failed evaluation."""
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
    except DomainClipError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    try:
        result = evaluate_bundle(args["bundle"], args["card"], args.get("split", "test"), args.get("base"))
        text = json.dumps(result, indent=2)
        if args.get("out"):
            Path(args["out"]).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args["out"]) / "metrics.json", text)
    except USER_ERRORS as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(summary_lines(result, args.get("out")))
    return 0


def summary_lines(result: dict, out: str | None) -> str:
    """What a reviewer reads first; the full JSON goes to ``out=DIR/metrics.json``."""

    img = result["clinical"]["image_level"]
    lines = [f"{result['card']} ({result['split']}, n={result['clinical'].get('n', img.get('n'))}) scored by {result['bundle']}",
             "locked temperature and thresholds (nothing refitted); metrics after temperature scaling:",
             *(f"  {k}: {_ci(img, k)}" for k in ("top1", "balanced_accuracy", "macro_auroc") if k in img)]
    lines += conformal_lines(result["clinical"], where="locked-threshold", indent="  ")
    for flag in result["clinical"].get("flags", []):
        lines.append(f"warning: {flag}")
    lines.append(f"full metrics: {Path(out) / 'metrics.json'}" if out else "full metrics: pass out=DIR to write metrics.json")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
