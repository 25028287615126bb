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


def main() -> None:
    """Console-script entry point (``domainclip ...``)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    _hydra_main()


if __name__ == "__main__":
    main()
