"""One live run per run directory: an exclusive lock held for the whole run.

The lock is ``fcntl.flock`` on ``run_dir/.lock`` (through ``filelock``): the kernel releases it
when the process dies, even on SIGKILL, so a crashed run never leaves a stale lock behind, and a
second launch into a directory a live run holds is refused at once with one line.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from domainclip.core.errors import ConfigError

LOCK_NAME = ".lock"


@contextmanager
def hold_run_dir(run_dir: Path):
    """Create ``run_dir`` if needed and hold its lock while the block runs."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / LOCK_NAME
        probe.touch(exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise PermissionError(run_dir)
    except OSError as exc:
        raise ConfigError(f"run_dir={run_dir} is not writable ({exc.strerror or type(exc).__name__}); "
                          "choose another directory with run_dir=... or hydra.run.dir=...") from None
    lock = FileLock(str(probe), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"run_dir={run_dir} is in use by another live run; wait for it to finish or choose "
                          "another directory (run_dir=... or hydra.run.dir=...)") from None
    try:
        yield run_dir
    finally:
        lock.release()
