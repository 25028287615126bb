"""``python -m domainclip.replay RUN_DIR [--out DIR] [--allow-changed-data]``: rerun a run from
its capsule.

The data files are checked against ``RUN_DIR/capsule/data.json`` first. A file that changed or
disappeared since the run is named and the replay stops (exit 2) unless ``--allow-changed-data``.
The rerun uses the capsule's resolved config with ``run_dir`` set to ``--out`` (default
``RUN_DIR/replay``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from domainclip.core.errors import USER_ERRORS, DomainClipError, one_line
from domainclip.pipeline.received import check_received_config
from domainclip.pipeline.run import run
from domainclip.training.reliability.capsule import changed_files


def check_data(run_dir: Path) -> list[str]:
    """Files that differ from the capsule (empty when the data is unchanged)."""

    capsule = Path(run_dir) / "capsule" / "data.json"
    if not capsule.is_file():
        raise DomainClipError(f"{run_dir}: no capsule/data.json; only runs made by domainclip can be replayed")
    return changed_files(json.loads(capsule.read_text()))


def replay(run_dir: Path, out: Path | None = None, allow_changed_data: bool = False):
    """Rerun ``run_dir``'s config after checking its data; returns the new run's ``Result``."""
    from omegaconf import OmegaConf


    run_dir = Path(run_dir)
    changed = check_data(run_dir)
    if changed and not allow_changed_data:
        listed = "\n  ".join(changed[:50])
        raise DomainClipError(f"{len(changed)} data file(s) changed since {run_dir} ran:\n  {listed}\n"
                              "restore them, or pass --allow-changed-data to rerun on the new data")
    check_received_config(run_dir / "capsule" / "config.yaml")  # no code named by a received capsule
    cfg = OmegaConf.load(run_dir / "capsule" / "config.yaml")
    cfg.run_dir = str(out or run_dir / "replay")
    return run(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m domainclip.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--allow-changed-data", action="store_true")
    ap.add_argument("--check-only", action="store_true", help="only compare the data with the capsule")
    args = ap.parse_args(argv)
    try:
        if args.check_only:
            changed = check_data(args.run_dir)
            print("\n".join(changed) if changed else "data unchanged")
            return 2 if changed else 0
        result = replay(args.run_dir, args.out, args.allow_changed_data)
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"replayed into {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
