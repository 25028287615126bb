"""External sites: the locked model evaluated on other sites' data cards, side by side.

Every record of an external card is test data. The temperature, operating points and conformal
thresholds come from the development site's validation split and are never refitted. Differences
between sites use a bootstrap that resamples each site's groups independently.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from domainclip.core.errors import CardError
from domainclip.data import CardData, load_card_data
from domainclip.data.datamodule import SplitDataModule
from domainclip.evaluation.bootstrap import independent_bootstrap
from domainclip.evaluation.clinical import EvalSettings, Predictions
from domainclip.evaluation.evaluators import evaluator_of
from domainclip.evaluation.scores import HEADLINE
from domainclip.pipeline.run_data import build_datasets, predictions

COMPARED = ("top1", "balanced_accuracy", "macro_auroc")


@dataclasses.dataclass
class ExternalSite:
    """An external card's records (all of them, as one ``test`` split) and their data module."""

    data: CardData
    dm: SplitDataModule


def load_external_sites(cfg: DictConfig, data: CardData, task) -> dict[str, ExternalSite]:
    """Read, check and prepare every card in ``eval.external_cards`` (before any training)."""
    sites = {}
    demo_dir = Path(cfg.data.demo_dir) if cfg.data.demo_dir else None
    for ref in cfg.eval.get("external_cards") or []:
        ext = load_card_data(ref, demo_dir, cfg.data.on_error)
        if ext.class_names != data.class_names or ext.card.task != data.card.task:
            raise CardError(f"{ext.path}: eval.external_cards needs the same task and classes in the same order as "
                            f"{data.path} ({data.class_names}); it has {ext.card.task} {ext.class_names}")
        if ext.card.name == data.card.name or ext.card.name in sites:
            raise CardError(f"{ext.path}: eval.external_cards lists card '{ext.card.name}' twice (or the development "
                            "card itself); give each site its own card name")
        records = [r for recs in ext.splits.values() for r in recs]
        if not records:
            raise CardError(f"{ext.path}: no readable record; an external site needs at least one")
        ext = dataclasses.replace(ext, splits={"test": records})
        datasets, _ = build_datasets(cfg, ext, task, {"test": [0] * len(records)}, source="files")  # its own files
        sites[ext.card.name] = ExternalSite(ext, SplitDataModule(datasets, cfg.eval.batch_size, cfg.data.num_workers,
                                                                 cfg.seed))
    return sites


def evaluate_sites(task, sites: dict[str, ExternalSite], clinical: dict, settings: EvalSettings,
                   device=None) -> dict:
    """The locked model's clinical report on each external site, plus its predictions (computed
    on ``device``; ``None``: where the task is)."""
    out = {}
    for name, site in sites.items():
        pred = predictions(task, site.dm, site.data, ["test"], device=device)["test"]
        own = dataclasses.replace(settings, subgroups=list(site.data.card.subgroups))
        out[name] = (pred, evaluator_of(clinical).clinical(None, pred, site.data.class_names, own, locked_from=clinical))
    return out


def _row(report: dict) -> dict:
    img = report["image_level"]
    row = {"n": report["n"], **{k: img.get(k) for k in (*COMPARED, "ece")},
           **{f"{k}_ci": img.get(f"{k}_ci") for k in COMPARED}}
    conformal = report.get("conformal")
    if conformal and "lac" in conformal:
        row["conformal"] = {"alpha": conformal["alpha"], "coverage": conformal["lac"]["coverage"],
                            "coverage_ci": conformal["lac"].get("coverage_ci"),
                            "mean_set_size": conformal["lac"]["mean_set_size"]}
    return row


def site_difference(metric_a, groups_a, metric_b, groups_b, settings: EvalSettings) -> dict:
    """External minus development, with a CI when ``eval.bootstrap`` > 0 (NaN otherwise)."""
    if settings.bootstrap:
        return independent_bootstrap(metric_a, groups_a, metric_b, groups_b, settings.bootstrap, settings.seed)
    difference = float(metric_b(np.arange(len(groups_b))) - metric_a(np.arange(len(groups_a))))
    return {"difference": difference, "ci": [float("nan"), float("nan")], "p_value_two_sided": float("nan"),
            "note": "eval.bootstrap=0: no CI"}


def compare_sites(development: str, test: Predictions, clinical: dict, external: dict, settings: EvalSettings) -> dict:
    """Sites side by side, and each external site minus the development site's test split, with
    CIs from resampling each site's groups independently. ``worse`` lists what is worse beyond its CI."""
    out = {"sites": {development: _row(clinical), **{n: _row(r) for n, (_, r) in external.items()}},
           "differences": {}, "worse": []}
    if clinical.get("multi_label"):
        out["note"] = "differences between sites are computed for single-label cards"
        return out
    t = clinical["temperature"]
    pa, ya = (test.logits / t).softmax(-1).numpy().astype(np.float64), test.targets.numpy()
    for name, (pred, _) in external.items():
        pb, yb = (pred.logits / t).softmax(-1).numpy().astype(np.float64), pred.targets.numpy()
        diffs = {k: site_difference(lambda i, f=HEADLINE[k]: f(pa[i], ya[i]), test.groups,
                                    lambda i, f=HEADLINE[k]: f(pb[i], yb[i]), pred.groups, settings) for k in COMPARED}
        out["differences"][name] = diffs
        out["worse"] += [f"{name}: {k} {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] vs {development} test"
                         for k, d in diffs.items() if d["ci"][1] < 0]
    return out
