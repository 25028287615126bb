"""``python -m domainclip.export run_dir=PATH [merge=true]``: re-export a finished run's bundle.
``python -m domainclip.export repair=BUNDLE``: put back the complete bundle an export interrupted
between its two renames left as ``BUNDLE.previous`` (loading never does this by itself).

The run's resolved ``config.yaml`` rebuilds the task; the trained tensors come from
``checkpoints/last.ckpt`` (loaded with ``weights_only=True``); metrics from ``metrics.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from domainclip.core.errors import USER_ERRORS, DomainClipError, one_line
from domainclip.export.bundle import recover_interrupted
from domainclip.pipeline.run import evaluate_trained, export_bundle, predictions, setup, write_summary
from domainclip.training.reliability.checkpoint_io import safe_torch_load


def reexport(run_dir: Path, merge: bool | None = None) -> Path:
    """Rebuild the run's task from its config and checkpoint, then write ``bundle/`` again."""

    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise DomainClipError(f"{run_dir}: config.yaml missing; is this a domainclip run directory?")
    cfg = OmegaConf.load(cfg_file)
    cfg.run_dir = str(run_dir)
    if merge is not None:
        cfg.export.merge = merge
    parts = setup(cfg)
    metrics_file = run_dir / "metrics.json"
    before = None if metrics_file.is_file() else predictions(parts.task, parts.dm, parts.data, list(cfg.eval.splits),
                                                             zero_shot=True)  # zero-shot, before the trained tensors
    if parts.task.method.trains:
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise DomainClipError(f"{ckpt} missing: the run kept no checkpoint (trainer.enable_checkpointing=false?)")
        state = safe_torch_load(ckpt)["state_dict"]
        missing = {n for n, p in parts.task.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise DomainClipError(f"{ckpt} lacks trained tensors {sorted(missing)[:5]}; it belongs to another run")
        parts.task.load_state_dict(state, strict=False)
    if before is not None:  # the run died after training: evaluate now, so metrics.json and the report exist
        print(f"{metrics_file} missing: evaluating the checkpoint first", file=sys.stderr)
        summary, after = evaluate_trained(parts, before)
        write_summary(parts, summary, after.get("test"))
    metrics = json.loads(metrics_file.read_text())["metrics"]
    return export_bundle(parts, metrics)


USAGE = "usage: python -m domainclip.export run_dir=PATH [merge=true|false] | repair=BUNDLE"


def main(argv: list[str] | None = None) -> int:
    """Re-export a run's bundle, or repair an interrupted export; one line and exit 2 on bad use."""
    argv = list(argv if argv is not None else sys.argv[1:])
    if any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    loose = [a for a in argv if "=" not in a]
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(args) - {"run_dir", "merge", "repair"}
    if loose or unknown or len({"run_dir", "repair"} & set(args)) != 1:
        print(f"error: {USAGE} (not understood: {sorted(unknown) + loose})", file=sys.stderr)
        return 2
    if "repair" in args:
        return repair(Path(args["repair"]))
    merge = None if "merge" not in args else args["merge"].lower() in ("1", "true", "yes")
    try:
        out = reexport(Path(args["run_dir"]), merge)
    except USER_ERRORS as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"bundle written to {out}")
    return 0


def repair(bundle: Path) -> int:
    """Put an interrupted export's previous bundle back (see ``export.bundle.recover_interrupted``)."""
    if bundle.exists():
        print(f"{bundle} is in place; nothing to repair")
        return 0
    if not recover_interrupted(bundle):
        print(f"error: {bundle}: neither the bundle nor a complete {bundle.name}.previous is there", file=sys.stderr)
        return 1
    print(f"{bundle} put back from {bundle.name}.previous")
    return 0


if __name__ == "__main__":
    sys.exit(main())
