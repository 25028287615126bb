"""``python -m domainclip [overrides]``: a thin Hydra entry point around :func:`domainclip.run.run`."""
from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from domainclip.paths import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from domainclip.errors import USER_ERRORS, one_line
    from domainclip.run import run

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


def main() -> None:
    """Console-script entry point (``domainclip ...``)."""
    import warnings

    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_MODE", "offline")
    _hydra_main()


if __name__ == "__main__":
    main()
