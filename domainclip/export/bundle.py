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

BUNDLE_SCHEMA_VERSION = 1
HEADS_FILE = "heads.safetensors"
SUMS_FILE = "SHA256SUMS"


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


def write_bundle(out_dir: Path, task, metadata: dict) -> Path:
    """Export the trained state of ``task`` with ``metadata`` into ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = task.method.export(task.tower, tmp)
    heads = {k: v.detach().cpu().contiguous() for k, v in task.tower.export_state_dict().items()}
    save_file(heads, str(tmp / HEADS_FILE), metadata={"format": "pt"})
    meta = {"schema_version": BUNDLE_SCHEMA_VERSION, **metadata, "files": files + [HEADS_FILE], "versions": versions()}
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    (tmp / "MODEL_CARD.md").write_text(render_model_card(meta))
    write_sums(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
