"""Adaptation methods, registered by name: ``zero_shot``, ``linear_probe``, ``lora``, ``coop``,
``cocoop``, ``vpt``, ``full``, ``wise_ft``. Every module here is imported, so a new method is one
new file (plus its ``conf/method/NAME.yaml``)."""
from domainclip.core.registry import import_submodules
from domainclip.methods.base import METHODS, Method, build_method

import_submodules(__name__, __path__)

__all__ = ["METHODS", "Method", "build_method"]
