"""The report's case gallery: for each class, the most confident correct, the most confident wrong
and the most uncertain test case, each with the adapted model's map over it: the class's
probability at each location, with the report's locked calibration (for multi-label cards: per
finding, against its locked operating point). Pictures and their names carry no identifier: a
case is named by its number, class and kind, and its group by a pseudonym (salted with the card
digest, as in shards)."""
from __future__ import annotations

from pathlib import Path

import torch

from domainclip.core.names import file_slug
from domainclip.data import CardData, ImageDataset
from domainclip.evaluation.clinical import Predictions
from domainclip.evaluation.evaluators import evaluator_of
from domainclip.evaluation.overlays import display_image, overlay_png, slug
from domainclip.shards.build import pseudonym
from domainclip.transforms.pipeline import DomainOptions

KINDS = ("most confident correct", "most confident wrong", "most uncertain")


def pick_cases(probs: torch.Tensor, targets: torch.Tensor) -> list[tuple[int, str, int]]:
    """(true class, kind, row) for each class and each kind it has: among the class's images, the
    correct one with the highest probability, the wrong one whose wrong class has the highest
    probability, and the one with the smallest margin between its two most probable classes."""
    pred = probs.argmax(dim=1)
    top = probs.topk(min(2, probs.shape[1]), dim=1).values
    margin = top[:, 0] - top[:, -1]
    cases = []
    for k in range(probs.shape[1]):
        rows = (targets == k).nonzero()[:, 0]
        if not len(rows):
            continue
        right, wrong = rows[pred[rows] == k], rows[pred[rows] != k]
        if len(right):
            cases.append((k, KINDS[0], int(right[probs[right, k].argmax()])))
        if len(wrong):
            cases.append((k, KINDS[1], int(wrong[probs[wrong, pred[wrong]].argmax()])))
        cases.append((k, KINDS[2], int(rows[margin[rows].argmin()])))
    return cases


def pick_label_cases(probs: torch.Tensor, targets: torch.Tensor, thresholds: list[float]) -> list[tuple[int, str, int]]:
    """Multi-label: (finding, kind, row) for each finding and each kind it has, against the
    finding's operating point: the present finding detected with the highest probability, the
    error (missed or false alarm) farthest from the threshold, and the image nearest to it."""
    cases = []
    for k, threshold in enumerate(thresholds):
        p, present = probs[:, k], targets[:, k].bool()
        correct = (p >= threshold) == present
        right, wrong = (present & correct).nonzero()[:, 0], (~correct).nonzero()[:, 0]
        if len(right):
            cases.append((k, KINDS[0], int(right[p[right].argmax()])))
        if len(wrong):
            cases.append((k, KINDS[1], int(wrong[(p[wrong] - threshold).abs().argmax()])))
        cases.append((k, KINDS[2], int((p - threshold).abs().argmin())))
    return cases


@torch.inference_mode()
def write_gallery(report_dir: Path, model, data: CardData, test: Predictions, clinical: dict) -> list[dict]:
    """Write ``report_dir/gallery/*.png`` for a run's test split (probabilities with the report's
    locked calibration); returns the cases (class, kind, predicted, probability, true label, group
    pseudonym, file) for the report. Multi-label: predicted and true say present or absent."""
    card = data.card
    records = data.splits.get("test") or []
    if not records:
        return []
    evaluator = evaluator_of(clinical)
    probs = evaluator.probabilities(test.logits.float(), clinical)
    multi = card.task == "multi_label"
    names = data.class_names
    picks = pick_label_cases(probs, test.targets, [clinical["thresholds"][c] for c in names]) if multi \
        else pick_cases(probs, test.targets)
    pre = model.tower.preprocess
    dataset = ImageDataset(records, card.reader.name, card.reader.options, DomainOptions.from_dict(card.transforms),
                           pre, len(card.classes))
    folder = report_dir / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    cases = []
    pixels = torch.stack([dataset.load(row) for _, _, row in picks])
    maps = model.probability_maps(pixels, lambda logits: evaluator.probabilities(logits, clinical))  # one pass
    for n, (k, kind, row) in enumerate(picks):
        if multi:  # the finding's own map; present or absent against its operating point
            shown, probability = k, float(probs[row, k])
            verdict = "present" if probability >= clinical["thresholds"][names[k]] else "absent"
            predicted, true = f"{names[k]} {verdict}", f"{names[k]} {'present' if test.targets[row, k] else 'absent'}"
        else:
            shown = int(probs[row].argmax())
            probability, predicted, true = float(probs[row, shown]), names[shown], names[int(test.targets[row])]
        file = f"case{n:02d}-{file_slug(k, names[k])}-{slug(kind)}.png"
        overlay_png(folder / file, display_image(pixels[n], pre.mean, pre.std), maps[n, shown])
        cases.append({"class": names[k], "kind": kind, "predicted": predicted, "probability": probability,
                      "true": true, "group": pseudonym(records[row].group, data.digest), "file": f"gallery/{file}"})
    return cases


def gallery_section(cases: list[dict]) -> str:
    """The report's markdown for the gallery (empty when there is none)."""
    if not cases:
        return ""
    lines = ["## Case gallery (test; map of the predicted class, or of the finding for multi-label cards; "
             "brighter = the class is more probable there)", "",
             "| class | case | predicted (p) | true | group (pseudonym) | image and map |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['class']} | {c['kind']} | {c['predicted']} ({c['probability']:.2f}) | {c['true']} | "
              f"`{c['group']}` | ![{c['kind']}]({c['file']}) |" for c in cases]
    return "\n".join(lines) + "\n\n"
