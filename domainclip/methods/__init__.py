"""Adaptation methods, registered by name: ``zero_shot``, ``lora``."""
from domainclip.methods import lora, zero_shot  # noqa: F401 - registration side effect
from domainclip.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
