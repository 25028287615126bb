"""Write an export bundle: safetensors weights, metadata.json, MODEL_CARD.md, SHA256SUMS."""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

from domainclip.core.fileio import sha256_file, writing
from domainclip.core.version import __version__
from domainclip.export.base_models import portable_config, register_base
from domainclip.export.merge import write_merged
from domainclip.export.model_card import render_model_card
from domainclip.export.onnx import write_onnx
from domainclip.export.phi import audit, card_free_text, refuse_on_hits
from domainclip.export.schema import SCHEMA_VERSION, validate_metadata
from domainclip.model.adapted import HEADS_FILE  # noqa: F401 - the bundle's file names, re-exported

SUMS_FILE = "SHA256SUMS"
REPRODUCE_FILE = "reproduce.yaml"  # the resolved run config; not config.yaml, which conf/ would shadow


def write_sums(bundle: Path) -> None:
    """SHA256SUMS over every other file in the bundle (sha256sum format)."""
    lines = [f"{sha256_file(p)}  {p.relative_to(bundle).as_posix()}"
             for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != SUMS_FILE]
    (bundle / SUMS_FILE).write_text("\n".join(lines) + "\n")


def versions() -> dict:
    import peft
    import pytorch_lightning
    import transformers

    return {"domainclip": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "pytorch_lightning": pytorch_lightning.__version__, "python": platform.python_version()}


SAFETENSORS_METADATA = {"format": "pt"}


def _free_text(meta: dict, card) -> dict:
    """The human-written or generated texts that generic PHI patterns are checked against."""

    return {"classes": meta["classes"], "prompts": meta["captions"]["texts"], "card_text": card_free_text(card)}


def write_bundle(out_dir: Path, model, metadata: dict, card, card_text: str, config_text: str,
                 captions: list[str], identifiers: dict[str, str], merge: bool = False, onnx: bool = False) -> Path:
    """Validate, PHI-audit, then export the ``AdaptedModel`` into ``out_dir`` atomically.

    The audit covers metadata, model card, data card, config, every caption and the safetensors
    header metadata, before a single file is written; a hit raises ``BundleError``.
    """

    out_dir = Path(out_dir)
    recover_interrupted(out_dir)
    files = model.files() + ["data_card.yaml", REPRODUCE_FILE]
    tower = dict(metadata["tower"])
    meta = {"schema_version": SCHEMA_VERSION, **metadata, "files": files, "versions": versions(),
            "tower": {**tower, "config": portable_config(tower["config"])}}
    validate_metadata(meta, str(out_dir))
    card_md = render_model_card(meta)
    texts = {"metadata": meta, "model_card": card_md, "data_card": card_text, "config": config_text,
             "captions": captions, "safetensors_metadata": SAFETENSORS_METADATA,
             "model_spec": {**model.spec, "tower": meta["tower"]["config"]}, **_free_text(meta, card)}
    refuse_on_hits(audit(texts, identifiers, free_text={"captions", "classes", "prompts", "card_text"}))

    tmp = out_dir.with_name(out_dir.name + ".partial")
    with writing(out_dir, (tmp,)):
        _write_files(tmp, model, meta, card_text, config_text, merge, onnx)
    register_base(tower["config"], tower["weights_digest"])
    swap_in(tmp, out_dir)
    return out_dir


def _write_files(tmp: Path, model, meta: dict, card_text: str, config_text: str, merge: bool, onnx: bool) -> None:
    """Every bundle file into the staging folder ``tmp``."""

    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save(tmp, tower_config=meta["tower"]["config"])
    portable_adapter_config(tmp, meta["tower"]["config"])
    (tmp / "data_card.yaml").write_text(card_text)
    (tmp / REPRODUCE_FILE).write_text(config_text)
    if merge:
        meta["files"] += write_merged(model, tmp)
    if onnx:
        meta["files"] += write_onnx(model, tmp)
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    (tmp / "MODEL_CARD.md").write_text(render_model_card(meta))
    write_sums(tmp)
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def portable_adapter_config(folder: Path, tower_config: dict) -> None:
    """peft writes the base model's local path into ``adapter_config.json``; keep the portable name."""
    path = folder / "adapter_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        sources = [tower_config.get(k) for k in ("path",) if tower_config.get(k)]
        cfg["base_model_name_or_path"] = str(sources[0]) if sources else None
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def _previous(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".previous")


def swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the complete ``tmp``: the old bundle is moved aside first and deleted
    only after the new one is in place, so a crash at any point leaves a complete bundle on disk
    (``out_dir``, or ``out_dir.previous``, which :func:`recover_interrupted` puts back)."""
    previous = _previous(out_dir)
    if previous.exists():
        shutil.rmtree(previous)
    if out_dir.exists():
        os.rename(out_dir, previous)
    os.rename(tmp, out_dir)
    if previous.exists():
        shutil.rmtree(previous)


def recover_interrupted(out_dir: Path) -> bool:
    """After a crash between the two renames of :func:`swap_in`: put the previous bundle back
    (export does this before writing; ``python -m domainclip.export repair=BUNDLE`` on request).
    Returns whether a bundle was put back."""
    out_dir = Path(out_dir)
    previous = _previous(out_dir)
    if not out_dir.exists() and previous.is_dir() and (previous / SUMS_FILE).is_file():
        os.rename(previous, out_dir)
        return True
    return False
