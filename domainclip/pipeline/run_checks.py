"""What a run checks before work: config values (before any data is read) and, once the card is
loaded and split, that every split and class the evaluation needs is there (before training).

Each failure is one ``ConfigError``/``CardError`` line naming the key or split and what to do.
"""
from __future__ import annotations

from omegaconf import DictConfig

from domainclip.core.errors import CardError
from domainclip.data.card_checks import missing_classes
from domainclip.pipeline.config_checks import EVAL_SPLITS, check_run_config  # noqa: F401 - re-exported


def class_groups(data) -> dict[str, int]:
    """Per class: how many groups (patients, slides...) of the whole card hold a sample of it."""
    groups: dict[str, set[str]] = {c: set() for c in data.class_names}
    for records in data.splits.values():
        for rec in records:
            for k in rec.labels:
                groups[data.class_names[k]].add(rec.group)
    return {c: len(g) for c, g in groups.items()}


def check_splits(cfg: DictConfig, data, trains: bool) -> dict[str, dict[str, str]]:
    """Splits and classes: refuse before any feature pass or training what would otherwise crash
    evaluation after training. A class with no training sample is refused; one that has too few
    groups to reach val or test is trained on and reported as not evaluated there (returned as
    {split: {class: reason}}), unless the card sets ``split.require_every_class: true``."""
    needed = [s for s in EVAL_SPLITS if s in list(cfg.eval.splits)]
    if trains:
        needed.insert(0, "train")
    empty = [s for s in needed if not data.splits.get(s)]
    if empty:
        raise CardError(f"{data.path}: split(s) {empty} are empty after splitting and skipping unreadable files; "
                        "add data, change split.fractions, or give a split column")
    if data.card.task != "single_label":
        return {}
    missing = missing_classes(data.counts(), needed)
    untrained = {"train": missing["train"]} if missing.get("train") and trains else {}
    if untrained or (missing and data.card.split.require_every_class):
        where = "; ".join(f"{s}: {c}" for s, c in (untrained or missing).items())
        raise CardError(f"{data.path}: class(es) with no sample in a split the run needs ({where}); try another "
                        "split.seed, give a split column in the manifest, or drop the class")
    groups = class_groups(data)
    return {split: {c: f"not evaluated on {split} ({groups[c]} group{'s' if groups[c] != 1 else ''})"
                    for c in classes} for split, classes in missing.items() if split != "train"}
