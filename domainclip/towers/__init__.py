"""Towers, registered by name: ``two_tower`` (the embedded LiT default), ``hf_clip``, ``hf_siglip``, ``open_clip``."""
from transformers.utils import logging as _hf_logging

_hf_logging.disable_progress_bar()  # no per-load weight progress bars in logs

from domainclip.towers import hf_clip, open_clip_tower, two_tower  # noqa: F401 - registration side effect
from domainclip.towers.base import TOWERS, Tower, build_tower

__all__ = ["TOWERS", "Tower", "build_tower"]
