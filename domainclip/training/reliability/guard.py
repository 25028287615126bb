"""Non-finite guard (``guard.nonfinite: skip | halt``) for the optimizer step.

After backward, every rank checks its loss and gradients for NaN/inf and the ranks agree with an
all-reduce, so they all take the same branch (no rank waits in a collective the others skipped,
the hang of Lightning issue 5243):

- ``skip``: no optimizer step on any rank; the step and its sample ids go to
  ``run_dir/nonfinite.jsonl``; more than ``max_consecutive`` skips in a row halts.
- ``halt``: every rank stops with a ``TrainingHalted`` error naming the step and samples.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from domainclip.core.distributed import any_rank, world
from domainclip.core.errors import DomainClipError


class TrainingHalted(DomainClipError):
    """Training stopped by the non-finite guard."""


class NonFiniteGuard:
    """Decides, on all ranks together, whether an optimizer step may be taken."""

    def __init__(self, mode: str = "skip", max_consecutive: int = 5, log_file: Path | None = None):
        if mode not in ("skip", "halt", "off"):
            raise DomainClipError(f"guard.nonfinite={mode!r}: use skip, halt or off")
        self.mode, self.max_consecutive, self.log_file = mode, int(max_consecutive), log_file
        self.consecutive, self.skipped = 0, []

    def step_allowed(self, loss: torch.Tensor | None, params, step: int, ids: list[int]) -> bool:
        """True when the loss and every gradient are finite on every rank."""
        if self.mode == "off":
            return True
        bad = loss is None or not bool(torch.isfinite(loss).all())
        bad = bad or any(p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in params)
        if not any_rank(bad, loss.device if loss is not None else "cpu"):
            self.consecutive = 0
            return True
        self._record(step, ids)
        if self.mode == "halt":
            raise TrainingHalted(f"non-finite loss or gradient at step {step} (samples {ids[:20]}); "
                                 "guard.nonfinite=halt stopped training. Check these inputs, lower the "
                                 "learning rate, or use guard.nonfinite=skip")
        self.consecutive += 1
        if self.consecutive > self.max_consecutive:
            raise TrainingHalted(f"{self.consecutive} consecutive non-finite steps (last at step {step}); "
                                 "more than guard.max_consecutive: training is diverging. Lower the learning rate")
        return False

    def _record(self, step: int, ids: list[int]) -> None:
        rank = world()[0]
        entry = {"step": step, "rank": rank, "ids": ids, "action": self.mode}
        self.skipped.append(entry)
        if self.log_file is not None:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
            with Path(self.log_file).open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
