"""``python -m domainclip [overrides]``: a thin Hydra entry point around :func:`domainclip.pipeline.run.run`."""
from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from domainclip.core.errors import USER_ERRORS, ConfigError, one_line
from domainclip.core.paths import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from domainclip.pipeline.run import run

    try:
        run(cfg)
    except USER_ERRORS as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


KNOWN_WARNINGS = (  # third-party notices every run printed; domainclip's own warnings still show
    r".*is_gradient_checkpointing.*is deprecated.*",
    r"Found \d+ module\(s\) in eval mode.*",
    r"The '\w+_dataloader' does not have many workers.*",
    r".*does not have many workers which may be a bottleneck.*",
)


def config_error(argv: list[str]) -> str | None:
    """Compose the config from plain ``key=value`` overrides the way Hydra will, then run the
    run's config checks on it, before Lightning is imported: one line for what would fail (a key
    that does not exist, a missing option, a malformed override, a wrong type or range, a key the
    tower, method or loss does not take; a ``run_dir`` that cannot be written or that a live
    run holds); ``None`` when it passes, or when Hydra's own flags
    (``--multirun``, ``--config-name``...) are given and Hydra should judge them itself (the run
    checks again in any case)."""
    if any(a.startswith("-") for a in argv):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from domainclip.pipeline.config_checks import check_run_config, check_run_dir

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=list(argv))
    except (HydraException, OmegaConfBaseException) as exc:
        return describe_composition_error(exc)
    try:
        check_run_config(cfg)
        check_run_dir(cfg)
    except ConfigError as exc:
        return one_line(exc)
    return None


def describe_composition_error(exc: Exception) -> str:
    """Hydra's message as one line; an unknown key says how to find the real ones."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException):  # Hydra's own words, options on one line
        lines = [line.strip() for line in str(exc).split("Config search path:")[0].splitlines() if line.strip()]
        heading = next((i for i, line in enumerate(lines) if line.startswith("Available options")), None)
        if heading is None:
            return "; ".join(lines)
        return f"{'; '.join(lines[:heading])}; {lines[heading]} {', '.join(lines[heading + 1:])}"
    cause = exc.__cause__ or exc
    text = one_line(cause) if str(cause).strip() else one_line(exc)
    key = getattr(cause, "full_key", None)
    if "not in struct" in str(cause) and key:
        return (f"{key}: no such config key; check its spelling (python -m domainclip --cfg job lists every key), "
                f"or add a new one with +{key}=...")
    return text


def received_config_error(argv: list[str]) -> str | None:
    """One line when ``--config-dir`` names a bundle or run capsule whose files do not match their
    checksums, or whose config could run code (``pipeline.received``); None otherwise."""
    from pathlib import Path

    from domainclip.pipeline.received import check_received_dir, hydra_flag

    folder = hydra_flag(argv, "--config-dir", "-cd")
    if folder is None:
        return None
    try:
        check_received_dir(Path(folder), hydra_flag(argv, "--config-name", "-cn") or "config", argv)
    except USER_ERRORS as exc:
        return one_line(exc)
    return None


def main() -> None:
    """Console-script entry point (``domainclip ...``): config errors are one line, exit 2."""
    import warnings

    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_MODE", "offline")
    problem = received_config_error(sys.argv[1:]) or config_error(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
