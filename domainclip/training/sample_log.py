"""Which samples each training step consumed, per rank: ``run_dir/samples/rank{R}.jsonl``.

One line per optimizer step: ``{"epoch", "step", "batch", "ids"}`` with the train-split indices of
the real (non-padding) samples. It is the audit trail behind two guarantees: under DDP every
sample is seen exactly once per epoch across ranks, and a resumed run consumes the same sequence
as an uninterrupted one.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from domainclip.core.fileio import atomic_write_text


class SampleLog(pl.Callback):
    """Append the consumed sample ids of every training batch to ``dirpath/rank{R}.jsonl``."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        """On resume, drop the lines of steps after the checkpoint: they are about to run again, and
        the log must hold each step once."""
        path = self.dirpath / f"rank{trainer.global_rank}.jsonl"
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= trainer.global_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))  # a resume's trim: whole or not at all

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        ids = batch["index"]
        if "valid" in batch:
            ids = ids[batch["valid"]]
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step, "batch": batch_idx, "ids": ids.tolist()}
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with (self.dirpath / f"rank{trainer.global_rank}.jsonl").open("a") as fh:
            fh.write(json.dumps(line) + "\n")


def read_sample_log(dirpath: Path) -> dict[int, list[dict]]:
    """Per rank, the logged steps in order."""
    out = {}
    for path in sorted(Path(dirpath).glob("rank*.jsonl")):
        out[int(path.stem[4:])] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out
