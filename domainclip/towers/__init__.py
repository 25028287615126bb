"""Towers, registered by name: ``two_tower`` (the embedded LiT default), ``hf_clip``, ``hf_siglip``, ``open_clip``."""
from transformers.utils import logging as _hf_logging

_hf_logging.disable_progress_bar()  # no per-load weight progress bars in logs

from domainclip.core.registry import import_submodules  # noqa: E402
from domainclip.towers.base import TOWERS, Tower, build_tower  # noqa: E402

import_submodules(__name__, __path__)  # every module registers itself: a new tower is one new file

__all__ = ["TOWERS", "Tower", "build_tower"]
