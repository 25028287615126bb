"""What a run checks before work: config values (before any data is read) and, once the card is
loaded and split, that every split and class the evaluation needs is there (before training).

Each failure is one ``ConfigError``/``CardError`` line naming the key or split and what to do.
"""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig, OmegaConf

from domainclip.data.card_checks import missing_classes
from domainclip.errors import CardError, ConfigError

EVAL_SPLITS = ("val", "test")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (test, what is allowed)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "trainer.max_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.on_error": (lambda v: v in ("fail", "skip"), "fail or skip"),
    "data.shots": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "eval.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "eval.bootstrap": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = no CIs)"),
    "eval.operating_point": (lambda v: v in ("youden", "sensitivity"), "youden or sensitivity"),
    "eval.target_sensitivity": (lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)"),
    "eval.aggregate": (lambda v: v in ("mean", "topk"), "mean or topk"),
    "eval.topk": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "eval.splits": (lambda v: isinstance(v, list) and set(v) <= set(EVAL_SPLITS), f"a list from {list(EVAL_SPLITS)}"),
    "eval.conformal_alpha": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
                             "a number in (0, 1), e.g. 0.1 for 90% coverage"),
    "eval.external_cards": (lambda v: v is None or (isinstance(v, list) and all(isinstance(c, str) and c for c in v)),
                            "a list of data card names or paths, e.g. [demo_radiology_site_b], or []"),
    "seed": (_is_int, "an integer"),
}


def check_run_config(cfg: DictConfig) -> None:
    """Check the values users most often set, before any data is read."""
    for key, (test, allowed) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except Exception as exc:  # noqa: BLE001 - missing mandatory value, bad interpolation
            raise ConfigError(f"{key}: {exc}; set it on the command line ({key}=...)") from None
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if not test(value):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


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
