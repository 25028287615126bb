"""Checkpoint files: written atomically, read with ``weights_only=True`` only.

A checkpoint is first written to ``NAME.tmp`` in the same directory, flushed to disk, then renamed
over ``NAME`` (``os.replace`` is atomic on POSIX), so a crash or signal during the write leaves the
previous checkpoint intact. Reading never unpickles arbitrary objects: ``torch.load`` runs with
``weights_only=True`` and there is no switch to turn that off.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from domainclip.core.errors import DomainClipError
from domainclip.core.fileio import writing


class UnsafeCheckpointError(DomainClipError):
    """A checkpoint or weight file that needs unsafe unpickling."""


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, (tmp,)):  # a full disk: one line, no .tmp debris, the previous checkpoint kept
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def safe_torch_load(path: Path, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``; a file that needs code to load is refused."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError/RuntimeError variants
        if "weights_only" in str(err) or "Unsupported global" in str(err) or "Unpickl" in type(err).__name__:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: the file holds pickled code or objects, not only tensors "
                f"({str(err).splitlines()[0][:200]}). Only load checkpoints you trust; re-save them as tensors "
                "(safetensors or a weights-only torch.save)") from None
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes, weights-only reads."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return safe_torch_load(Path(path), map_location=map_location or "cpu")
