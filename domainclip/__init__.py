"""domainclip: adapt pretrained CLIP-style models to medical and remote-sensing images."""
from __future__ import annotations

__version__ = "0.1.0"


def load_bundle(path, verify: bool = True, base=None):
    """Load an exported bundle as a predictor (see :func:`domainclip.export.loader.load_bundle`).

    ``base``: the base model's directory (or a dict per source for two-tower models) when this
    machine did not train the bundle; bundles never choose their base model themselves."""
    from domainclip.export.loader import load_bundle as _load

    return _load(path, verify=verify, base=base)


__all__ = ["__version__", "load_bundle"]
