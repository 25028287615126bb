"""``run(cfg)``: build from config, evaluate zero-shot, fit, evaluate again, export."""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from domainclip.captions.bank import CaptionBank
from domainclip.captions.build import prepare_captions
from domainclip.core.devices import compute_device
from domainclip.core.distributed import launch_rank
from domainclip.core.errors import DomainClipError, one_line
from domainclip.core.fileio import atomic_write_text
from domainclip.data import CardData, load_card_data
from domainclip.data.card_checks import check_bands_to_rgb
from domainclip.data.datamodule import SplitDataModule
from domainclip.data.few_shot import few_shot_subset, short_classes
from domainclip.data.preflight import recorded_quarantine, write_quarantine
from domainclip.evaluation import classification_metrics
from domainclip.evaluation.aggregate import group_positive
from domainclip.evaluation.clinical import EvalSettings
from domainclip.evaluation.evaluators import evaluator_for
from domainclip.evaluation.gallery import write_gallery
from domainclip.evaluation.report import print_summary, write_report
from domainclip.evaluation.retrieval import task_retrieval
from domainclip.evaluation.slide_gallery import write_slide_gallery
from domainclip.export import write_bundle
from domainclip.export.phi import audit, audit_run_texts, identifying_values, refuse_on_hits
from domainclip.pipeline.few_shot_protocol import run_few_shot
from domainclip.pipeline.objectives import Adaptation, adapt
from domainclip.pipeline.reference import ReferenceZeroShot
from domainclip.pipeline.reproduce import reproduce_config, resolve_reproduced_base
from domainclip.pipeline.run_checks import check_run_config, check_splits
from domainclip.pipeline.run_data import build_datasets, eval_settings, input_adapter_spec, predictions, sample_meta
from domainclip.pipeline.sites import compare_sites, evaluate_sites, load_external_sites
from domainclip.training.reliability.capsule import write_capsule
from domainclip.training.reliability.guard import NonFiniteGuard
from domainclip.training.reliability.resume import find_checkpoint
from domainclip.training.reliability.run_lock import hold_run_dir
from domainclip.training.task import ContrastiveTask


@dataclass
class Result:
    """What a run produced."""

    run_dir: Path
    metrics: dict
    bundle_dir: Path | None
    timings: dict = field(default_factory=dict)


@dataclass
class RunParts:
    """Everything built from a config before training."""

    cfg: DictConfig
    run_dir: Path
    data: CardData
    bank: CaptionBank
    caption_report: dict
    task: ContrastiveTask
    dm: SplitDataModule
    cache_hits: dict
    timings: dict
    warnings: list[str] = field(default_factory=list)
    not_evaluated: dict = field(default_factory=dict)  # split -> class -> why it is not evaluated there
    identifiers: dict[str, str] | None = None  # identifying values in the data (read once: DICOM headers)
    external: dict = field(default_factory=dict)  # eval.external_cards: name -> sites.ExternalSite
    reference: ReferenceZeroShot | None = None  # method.reference_card (WiSE-FT), read before training

    def recorded_quarantine(self) -> list[dict]:
        """The skipped files as run-level records list them (relative, pseudonymised where needed)."""
        return recorded_quarantine(self.data.quarantine, self.data.root, self.identifying_values())

    def identifying_values(self) -> dict[str, str]:
        """The data's identifying values, for the audit before training and the export audit."""
        if self.identifiers is None:
            self.identifiers = identifying_values(self.data)
        return self.identifiers


def plain(node) -> dict:
    """A resolved plain dict from an OmegaConf node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def summarise(before: dict, after: dict, data: CardData, settings: EvalSettings) -> dict:
    """Per-split metrics before/after, plus the clinical report and paired comparison on test."""
    names = data.class_names
    metrics = {"zero_shot_before": {s: classification_metrics(p.logits, p.targets, names) for s, p in before.items()},
               "zero_shot_after": {s: classification_metrics(p.logits, p.targets, names) for s, p in after.items()}}
    if {"val", "test"} <= set(after):
        evaluator = evaluator_for(data.card.task)
        metrics["clinical"] = evaluator.clinical(after["val"], after["test"], names, settings)
        metrics["before_vs_after"] = evaluator.compare(before["test"], after["test"], settings)
    return metrics


def build_trainer(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
    """Trainer from ``cfg.trainer`` with the configured loggers (CSV always) and callbacks (a dict
    keyed by name; ``trainer.resume`` is read by :func:`adaptation`)."""
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()] if cfg.logger else []
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    options.pop("resume", None)
    callbacks = options.pop("callbacks", None) or {}
    callbacks = [hydra.utils.instantiate(c) for c in (callbacks.values() if isinstance(callbacks, dict) else callbacks)
                 if c]
    return hydra.utils.instantiate(options, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir))


def adaptation(parts: "RunParts") -> Adaptation:
    """The objective's inputs: task, data, trainer factory, the checkpoint ``trainer.resume``
    names (or None) and WiSE-FT's reference card (``method.reference_card``)."""
    cfg = parts.cfg
    return Adaptation(parts.task, parts.dm, lambda: build_trainer(cfg, parts.run_dir),
                      resume_ckpt=find_checkpoint(cfg.trainer.get("resume"), parts.run_dir, parts.task), reference=parts.reference)


def setup(cfg: DictConfig) -> RunParts:
    """Card, captions, task and datasets, from config (no training)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    timings, t0 = {}, time.perf_counter()
    data = load_card_data(cfg.data.card, Path(cfg.data.demo_dir) if cfg.data.demo_dir else None, cfg.data.on_error)
    group_positive(cfg.eval.get("group_label"), data.class_names)  # a class the card has, before any work
    warnings = []
    if cfg.data.get("shots"):
        warnings += short_classes(data, int(cfg.data.shots))
        data.splits["train"] = few_shot_subset(data.splits["train"], int(cfg.data.shots), int(cfg.seed))
    bank, caption_report = prepare_captions(data, cfg.captions.template_set, plain(cfg.captions.llm),
                                            cfg.captions.absent_findings)
    timings["data_and_captions_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    if data.card.transforms.get("bands_to_rgb"):
        check_bands_to_rgb(data.card, data.path, sample_meta(data).get("bands") or [])
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # cold and warm caches build the same model
    guard = cfg.get("guard") or {}
    task = ContrastiveTask(tower=plain(cfg.tower), method=plain(cfg.method), loss=plain(cfg.loss),
                           captions=bank.texts, pools=bank.pools, class_prompts=bank.class_prompts,
                           class_names=data.class_names, seed=cfg.seed, max_epochs=cfg.trainer.max_epochs,
                           input_adapter=input_adapter_spec(data),
                           guard=NonFiniteGuard(guard.get("nonfinite", "skip"), guard.get("max_consecutive", 5),
                                                run_dir / "nonfinite.jsonl"))
    not_evaluated = check_splits(cfg, data, task.method.trains)
    warnings += [f"class '{c}' {why}: too few groups to reach every split; its metrics there are NaN and macro "
                 "metrics cover the classes evaluated" for reasons in not_evaluated.values() for c, why in reasons.items()]
    datasets, cache_hits = build_datasets(cfg, data, task, bank.pool_ids)
    dm = SplitDataModule(datasets, cfg.data.batch_size, cfg.data.num_workers, cfg.seed,
                         balanced=bool(cfg.data.get("balanced_sampling", False)))
    external = load_external_sites(cfg, data, task)
    reference = cfg.method.get("reference_card")
    timings["features_s"] = time.perf_counter() - t
    return RunParts(cfg, run_dir, data, bank, caption_report, task, dm, cache_hits, timings, warnings,
                    not_evaluated=not_evaluated, external=external, reference=ReferenceZeroShot(reference) if reference else None)


def export_bundle(parts: RunParts, metrics: dict) -> Path:
    """PHI-audited bundle of the task's current weights into ``run_dir/bundle``."""

    cfg, data = parts.cfg, parts.data
    return write_bundle(parts.run_dir / "bundle", parts.task.model, bundle_metadata(parts, metrics), data.card,
                        data.path.read_text(), reproduce_config(cfg, parts.run_dir, parts.task.tower.weights_digest()),
                        parts.bank.texts,
                        parts.identifying_values(), merge=bool(cfg.export.merge),
                        onnx=bool(cfg.export.get("onnx", False)))


def run(cfg: DictConfig) -> Result:
    """The whole job: data, captions, training, evaluation, export. Tests call this.

    With ``data.shots=K`` and ``data.seeds=[...]`` it runs the few-shot protocol: one K-shot
    run per seed (under ``run_dir/seed_S``), aggregated as mean and sd in ``metrics.json``.
    """
    seeds = list(cfg.data.get("seeds") or [])
    if cfg.data.get("shots") and seeds:
        return run_few_shot(cfg, seeds, run_once)
    return run_once(cfg)


def run_once(cfg: DictConfig) -> Result:
    """One run: checks, data, captions, training, evaluation, export. Everything that can be
    checked (config, splits, classes, PHI in every text the run will write) is checked before the
    run directory gets its first file; a live run holds the directory's lock throughout."""
    t0 = time.perf_counter()
    check_run_config(cfg)
    resolve_reproduced_base(cfg)  # a reproduced bundle's portable base name -> this machine's weights
    lead = launch_rank() == 0  # under DDP only rank 0 evaluates and writes the run directory
    with hold_run_dir(Path(cfg.run_dir)) if lead else nullcontext():  # the lock file is the only write so far
        parts = setup(cfg)
        if lead:
            audit_before_writing(parts)
        return _train_and_evaluate(parts, lead, t0)


def audit_before_writing(parts: RunParts) -> None:
    """PHI audit of captions, class names, hyper-parameters and config before the first write."""

    texts = {"captions": parts.bank.texts, "classes": parts.data.class_names, "hparams": dict(parts.task.hparams),
             "config": OmegaConf.to_yaml(parts.cfg, resolve=True)}
    audit_run_texts(texts, parts.data.card, parts.identifying_values())


def _train_and_evaluate(parts: RunParts, lead: bool, t0: float) -> Result:
    cfg = parts.cfg
    task, dm, data, timings = parts.task, parts.dm, parts.data, parts.timings
    if lead:
        atomic_write_text(parts.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_capsule(parts.run_dir, cfg, data, parts.identifying_values())
        if data.quarantine:
            write_quarantine(parts.run_dir / "quarantine.jsonl", parts.recorded_quarantine())
    t = time.perf_counter()
    splits = list(cfg.eval.splits)
    device = compute_device(cfg.trainer.accelerator)
    before = predictions(task, dm, data, splits, zero_shot=True, device=device) if lead else {}
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # training RNG independent of what ran before
    method_report = adapt(adaptation(parts))
    timings["train_s"] = time.perf_counter() - t
    if not lead:
        return Result(run_dir=parts.run_dir, metrics={}, bundle_dir=None, timings=timings)
    t = time.perf_counter()
    summary, after = evaluate_trained(parts, before, method_report)
    metrics = summary["metrics"]
    if cfg.eval.gallery and "test" in after and "clinical" in metrics:
        summary["gallery"] = write_case_gallery(parts, after["test"], metrics["clinical"])
        refuse_on_hits(audit({"report gallery": summary["gallery"]}, parts.identifying_values(), free_text=set()),
                       "the report was not written")  # captions, file names and pseudonyms only: never expected
    timings["evaluation_s"] = time.perf_counter() - t
    write_summary(parts, summary, after.get("test"), report=False)  # before export: a refused bundle loses nothing
    t = time.perf_counter()
    try:
        bundle = export_bundle(parts, metrics) if cfg.export.enabled else None
    except DomainClipError as exc:
        summary["export"] = {"refused": one_line(exc)}
        write_summary(parts, summary, after.get("test"))
        raise
    timings["export_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    write_summary(parts, summary, after.get("test"))
    print_summary(summary)
    return Result(run_dir=parts.run_dir, metrics=metrics, bundle_dir=bundle, timings=timings)


def write_case_gallery(parts: RunParts, test, clinical: dict) -> list[dict]:
    """The report's gallery of test cases: images with similarity maps, or for slide-level runs
    slide thumbnails with the tile weights and top tiles."""
    report = parts.run_dir / "report"
    if parts.data.card.label_level == "slide":
        return write_slide_gallery(report, parts.task.model, parts.data, parts.dm.datasets["test"], test, clinical)
    return write_gallery(report, parts.task.model, parts.data, test, clinical)


def evaluate_trained(parts: RunParts, before: dict, method_report: dict | None = None) -> tuple[dict, dict]:
    """The evaluation stage on the trained task: the run summary (metrics.json) and the
    after-training predictions per split. ``before`` holds the zero-shot predictions."""
    cfg, task, dm, data = parts.cfg, parts.task, parts.dm, parts.data
    splits = list(cfg.eval.splits)
    device = compute_device(cfg.trainer.accelerator)
    after = predictions(task, dm, data, splits, device=device)
    settings = eval_settings(cfg, data)
    metrics = summarise(before, after, data, settings)
    if parts.not_evaluated:
        metrics["not_evaluated"] = parts.not_evaluated
    if parts.external and "clinical" in metrics:
        external = evaluate_sites(task, parts.external, metrics["clinical"], settings, device)
        metrics["external"] = {name: report for name, (_, report) in external.items()}
        metrics["sites"] = compare_sites(data.card.name, after["test"], metrics["clinical"], external, settings)
    if "test" in splits and data.card.label_level != "slide":  # slides have no caption of their own
        metrics["retrieval"] = {"test": task_retrieval(task, dm.eval_loader("test"))}
    if method_report:
        metrics["method"] = method_report
    summary = {"metrics": metrics, "captions": parts.caption_report, "cache_hits": parts.cache_hits,
               "timings": parts.timings, "card": data.card.name,
               "skipped": {"count": len(data.quarantine), "files": [q["path"] for q in parts.recorded_quarantine()]},
               "warnings": parts.warnings, "counts": data.counts(), "split_level": data.card.split.level}
    return summary, after


def write_summary(parts: RunParts, summary: dict, test, report: bool = True) -> None:
    """``metrics.json`` (atomically) and, with ``report``, the report folder."""
    atomic_write_text(parts.run_dir / "metrics.json", json.dumps(summary, indent=2))
    if report:
        write_report(parts.run_dir / "report", summary, parts.cfg, parts.data, test)


def bundle_metadata(parts: RunParts, metrics: dict) -> dict:
    """Everything a clinical evaluator needs to load and judge the bundle."""
    cfg, data, task, bank = parts.cfg, parts.data, parts.task, parts.bank
    pre = task.tower.preprocess
    return {
        "tower": {"name": cfg.tower.name, "config": plain(cfg.tower), "weights_digest": task.tower.weights_digest()},
        "method": {"name": cfg.method.name, "config": plain(cfg.method)},
        "loss": plain(cfg.loss),
        "classes": data.class_names,
        "captions": {**parts.caption_report, "count": len(bank.texts),
                     "texts": [bank.texts[r] for rows in bank.class_prompts for r in rows],
                     "labels": [k for k, rows in enumerate(bank.class_prompts) for _ in rows],
                     "provenance": [bank.provenance[r] for rows in bank.class_prompts for r in rows]},
        "preprocessing": {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std),
                          "resize_mode": pre.resize_mode, "interpolation": pre.interpolation, "reader": data.card.reader.name,
                          "reader_options": data.card.reader.options, "domain": data.card.transforms,
                          "units": sample_meta(data).get("units"), "label_level": data.card.label_level},
        "input_adapter": task.hparams.input_adapter,
        "phi_allowed": list(data.card.phi.allow),  # reviewed by the card's author as not identifying
        "data_card": {"name": data.card.name, "digest": data.digest, "modality": data.card.modality,
                      "license": data.card.license, "split_level": data.card.split.level, "counts": data.counts()},
        "metrics": metrics,
        "temperature": metrics.get("clinical", {}).get("temperature", 1.0),
        "thresholds": metrics.get("clinical", {}).get("thresholds", {}),
        "subgroups": metrics.get("clinical", {}).get("subgroups", {}),
        "conformal": bundle_conformal(metrics.get("clinical", {}).get("conformal")),
        "eval_settings": plain(cfg.eval),
        "reproduce": "python -m domainclip --config-dir BUNDLE_DIR --config-name reproduce",
    }


def bundle_conformal(conformal: dict | None) -> dict | None:
    """What ``predict_sets`` needs: alpha, and per score the threshold and the validation scores."""
    if not conformal:
        return None
    return {"alpha": conformal["alpha"], "probabilities": "softmax of the method's logits, before temperature scaling",
            "calibration": conformal["calibration"],
            **{m: {"threshold": conformal[m]["threshold"], "scores": conformal[m]["scores"]} for m in ("lac", "aps")}}
