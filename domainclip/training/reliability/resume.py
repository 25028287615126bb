"""Exact resume: RNG states and the data position travel in every checkpoint.

Lightning restores model, optimizer, scheduler, AMP scaler and loop progress, but not the random
number generators or the position in the epoch's data order. ``ResumeState`` adds both to the
checkpoint (as callback state) and puts them back: the sampler skips the batches the interrupted
epoch already consumed, and the RNG states (python, numpy, torch, CUDA) are restored just before
the first resumed step, so the run continues exactly as if it had never stopped.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from domainclip.core.errors import ConfigError, DomainClipError
from domainclip.training.reliability.checkpoint_io import safe_torch_load


def capture_rng() -> dict:
    """Every RNG state as tensors and plain values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the states from ``capture_rng``."""
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class ResumeState(pl.Callback):
    """Checkpoint state: RNG states and (epoch, batches done in that epoch); restored on resume."""

    def __init__(self):
        self.pending: dict | None = None

    def state_dict(self) -> dict:
        trainer = self._trainer
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"rng": capture_rng(), "epoch": trainer.current_epoch, "batches_done": int(progress.processed),
                "global_step": trainer.global_step}

    def load_state_dict(self, state_dict: dict) -> None:
        """Called while the checkpoint is restored, before the train loader exists: the datamodule
        applies the data position when it builds the loader (before any worker starts)."""
        self.pending = dict(state_dict)
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if dm is not None and self.pending["batches_done"]:
            dm.resume_at(self.pending["epoch"], self.pending["batches_done"] * dm.batch_size)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.pending is not None:  # the first step after resuming sees the saved RNG states
            restore_rng(self.pending["rng"])
            self.pending = None


CHECKPOINT_NAMES = ("last.ckpt", "periodic.ckpt")


def find_checkpoint(resume: str | None, run_dir: Path, module=None) -> str | None:
    """``trainer.resume``: ``auto`` = the newest of ``run_dir/checkpoints/{last,periodic}.ckpt``
    when one exists, a path = that file, null = start fresh. Says on stderr where it resumes from;
    a damaged or truncated checkpoint, or (with ``module``) one whose tensors do not fit the
    module this run built (another ``method.r``, tower or method), is a one-line ``ConfigError``
    before any training."""

    if not resume:
        return None
    if str(resume) == "auto":
        found = [p for p in (Path(run_dir) / "checkpoints" / n for n in CHECKPOINT_NAMES) if p.is_file()]
        if not found:
            print(f"trainer.resume=auto: no checkpoint in {Path(run_dir) / 'checkpoints'}; starting at step 0",
                  file=sys.stderr)
            return None
        path = max(found, key=lambda p: p.stat().st_mtime_ns)
    else:
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"trainer.resume={resume}: no such checkpoint; use auto, null or a .ckpt path")
    epoch, step = checkpoint_position(path, module)
    print(f"resuming from {path}: epoch {epoch}, step {step}", file=sys.stderr)
    return str(path)


def check_fits(path: Path, state: dict, module) -> None:
    """Refuse a checkpoint whose tensors do not fit ``module``: a trainable tensor missing, or a
    shared name with another shape."""
    own = module.state_dict()
    for name, tensor in state.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise ConfigError(f"checkpoint {path} was written by a run with other settings: tensor '{name}' is "
                              f"{tuple(tensor.shape)} there and {tuple(own[name].shape)} here (another method.r, "
                              "tower or method?); resume with the run's own settings, or start a new run_dir")
    missing = sorted(n for n, p in module.named_parameters() if p.requires_grad and n not in state)
    if missing:
        raise ConfigError(f"checkpoint {path} lacks this run's trained tensor(s) {missing[:3]}: it was written with "
                          "another method or settings; resume with the run's own settings, or start a new run_dir")


def checkpoint_position(path: Path, module=None) -> tuple[int, int]:
    """(epoch, global step) stored in a checkpoint; refuses a truncated or damaged file, and one
    that does not fit ``module`` (:func:`check_fits`)."""

    try:
        ckpt = safe_torch_load(path)
        if module is not None:
            check_fits(path, ckpt["state_dict"], module)
        return int(ckpt["epoch"]), int(ckpt["global_step"])
    except DomainClipError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated zip, missing keys
        raise ConfigError(f"checkpoint {path} is damaged or truncated ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120]}); delete it to start fresh, or set trainer.resume "
                          "to another checkpoint") from None
