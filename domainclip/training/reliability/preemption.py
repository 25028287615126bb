"""Preemption: on SIGTERM or SIGUSR1 finish the current step, checkpoint, exit 143 (or requeue).

The signal handler only sets a flag. After each training batch the ranks agree on the flag with an
all-reduce (one rank signalled = all stop, at the same step), write ``last.ckpt`` through the
atomic checkpoint I/O, and leave with exit code 143 (128 + SIGTERM), the code schedulers treat as
"terminated, may be retried". Under SLURM (``SLURM_JOB_ID`` set and ``requeue=true``) rank 0
requeues the job first with ``scontrol requeue``; ``trainer.resume=auto`` then continues it.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from domainclip.core.distributed import any_rank

EXIT_CODE = 143


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written; exits the process with code 143."""

    def __init__(self):
        super().__init__(EXIT_CODE)


class Preemption(pl.Callback):
    """Checkpoint to ``dirpath/last.ckpt`` and exit 143 at the first step end after a signal."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, dirpath: str, requeue: bool = True):
        self.dirpath, self.requeue = Path(dirpath), requeue
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def setup(self, trainer, pl_module, stage: str) -> None:
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not any_rank(self.requested, trainer.strategy.root_device):
            return
        self._checkpoint_and_exit(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A signal that lands after this callback's check but before Lightning's own (at the end
        of the same step) makes Lightning raise ``SIGTERMException``, which would exit 0 with no
        checkpoint: the step is complete here, so checkpoint it and exit 143 as above."""
        if isinstance(exception, SIGTERMException) and not isinstance(exception, Preempted):
            self._checkpoint_and_exit(trainer)

    def _checkpoint_and_exit(self, trainer) -> None:
        trainer.save_checkpoint(str(self.dirpath / "last.ckpt"))
        if trainer.global_rank == 0 and self.requeue and os.environ.get("SLURM_JOB_ID"):
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        raise Preempted()
