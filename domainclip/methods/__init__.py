"""Adaptation methods, registered by name: ``zero_shot``, ``linear_probe``, ``lora``, ``coop``,
``cocoop``, ``vpt``, ``full``, ``wise_ft``."""
from domainclip.methods import full, linear_probe, lora, prompt, vpt, wise_ft, zero_shot  # noqa: F401
from domainclip.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
