"""Write an export bundle: safetensors weights, metadata.json, MODEL_CARD.md, SHA256SUMS."""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from domainclip.export.model_card import render_model_card

HEADS_FILE = "heads.safetensors"
SUMS_FILE = "SHA256SUMS"
REPRODUCE_FILE = "reproduce.yaml"  # the resolved run config; not config.yaml, which conf/ would shadow


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sums(bundle: Path) -> None:
    """SHA256SUMS over every other file in the bundle (sha256sum format)."""
    lines = [f"{sha256_file(p)}  {p.relative_to(bundle).as_posix()}"
             for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != SUMS_FILE]
    (bundle / SUMS_FILE).write_text("\n".join(lines) + "\n")


def versions() -> dict:
    import peft
    import pytorch_lightning
    import transformers

    import domainclip

    return {"domainclip": domainclip.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "pytorch_lightning": pytorch_lightning.__version__, "python": platform.python_version()}


SAFETENSORS_METADATA = {"format": "pt"}


def _free_text(meta: dict, card) -> dict:
    """The human-written or generated texts that generic PHI patterns are checked against."""
    card_text = {"description": card.description, "citation": card.citation,
                 "classes": [{"name": c.name, "synonyms": c.synonyms, "description": c.description} for c in card.classes]}
    return {"classes": meta["classes"], "prompts": meta["captions"]["texts"], "card_text": card_text}


def write_bundle(out_dir: Path, task, metadata: dict, card, card_text: str, config_text: str,
                 captions: list[str], identifiers: dict[str, str], merge: bool = False, onnx: bool = False) -> Path:
    """Validate, PHI-audit, then export ``task`` into ``out_dir`` atomically.

    The audit covers metadata, model card, data card, config, every caption and the safetensors
    header metadata, before a single file is written; a hit raises ``BundleError``.
    """
    from domainclip.export.merge import write_merged
    from domainclip.export.phi import audit, refuse_on_hits
    from domainclip.export.schema import SCHEMA_VERSION, validate_metadata

    out_dir = Path(out_dir)
    files = list(task.method.export_files) + [HEADS_FILE, "data_card.yaml", REPRODUCE_FILE]
    meta = {"schema_version": SCHEMA_VERSION, **metadata, "files": files, "versions": versions()}
    validate_metadata(meta, str(out_dir))
    card_md = render_model_card(meta)
    texts = {"metadata": meta, "model_card": card_md, "data_card": card_text, "config": config_text,
             "captions": captions, "safetensors_metadata": SAFETENSORS_METADATA, **_free_text(meta, card)}
    refuse_on_hits(audit(texts, identifiers, free_text={"captions", "classes", "prompts", "card_text"}))

    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    task.method.export(task.tower, tmp)
    heads = {k: v.detach().cpu().contiguous() for k, v in task.tower.export_state_dict().items()}
    save_file(heads, str(tmp / HEADS_FILE), metadata=SAFETENSORS_METADATA)
    (tmp / "data_card.yaml").write_text(card_text)
    (tmp / REPRODUCE_FILE).write_text(config_text)
    if merge:
        meta["files"] += write_merged(task, tmp)
    if onnx:
        from domainclip.export.onnx import write_onnx

        meta["files"] += write_onnx(task, tmp)
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    (tmp / "MODEL_CARD.md").write_text(render_model_card(meta))
    write_sums(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
