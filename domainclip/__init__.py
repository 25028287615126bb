"""domainclip: adapt pretrained CLIP-style models to medical and remote-sensing images."""
from __future__ import annotations

__version__ = "0.1.0"


def load_bundle(path, verify: bool = True):
    """Load an exported bundle as a predictor (see :func:`domainclip.export.load_bundle`)."""
    from domainclip.export.loader import load_bundle as _load

    return _load(path, verify=verify)


__all__ = ["__version__", "load_bundle"]
