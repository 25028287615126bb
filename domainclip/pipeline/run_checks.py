"""What a run checks before work: config values (before any data is read) and, once the card is
loaded and split, that every split and class the evaluation needs is there (before training).

Each failure is one ``ConfigError``/``CardError`` line naming the key or split and what to do.
"""
from __future__ import annotations

from omegaconf import DictConfig

from domainclip.core.errors import CardError
from domainclip.data.card_checks import missing_classes
from domainclip.pipeline.config_checks import EVAL_SPLITS, check_run_config  # noqa: F401 - re-exported


def check_splits(cfg: DictConfig, data, trains: bool) -> None:
    """Splits and classes: refuse before any feature pass or training what would otherwise crash
    evaluation after training."""
    needed = [s for s in EVAL_SPLITS if s in list(cfg.eval.splits)]
    if trains:
        needed.insert(0, "train")
    empty = [s for s in needed if not data.splits.get(s)]
    if empty:
        raise CardError(f"{data.path}: split(s) {empty} are empty after splitting and skipping unreadable files; "
                        "add data, change split.fractions, or give a split column")
    if data.card.task != "single_label":
        return
    missing = missing_classes(data.counts(), needed)
    if missing:
        where = "; ".join(f"{s}: {c}" for s, c in missing.items())
        raise CardError(f"{data.path}: class(es) with no sample in a split the run needs ({where}); try another "
                        "split.seed, give a split column in the manifest, or drop the class")
