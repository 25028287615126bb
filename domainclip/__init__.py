"""domainclip: adapt pretrained CLIP-style models to medical and remote-sensing images."""
from __future__ import annotations

from omegaconf import OmegaConf

from domainclip.core.version import __version__

DEMO_CARDS = ("demo_pathology", "demo_radiology", "demo_satellite", "demo_slides")


def demo_site_b(card: str) -> list[str]:
    """The demo card's second site (``demo_X_site_b``), or none for any other card: recipes use it
    as ``eval.external_cards: ${demo_site_b:${data.card}}`` so that ``data.card=yours`` drops it."""
    return [f"{card}_site_b"] if card in DEMO_CARDS else []


if not OmegaConf.has_resolver("demo_site_b"):
    OmegaConf.register_new_resolver("demo_site_b", demo_site_b)


def load_bundle(path, verify: bool = True, base=None):
    """Load an exported bundle as a predictor (see :func:`domainclip.export.loader.load_bundle`).

    ``base``: the base model's directory (or a dict per source for two-tower models) when this
    machine did not train the bundle; bundles never choose their base model themselves."""
    from domainclip.export.loader import load_bundle as _load

    return _load(path, verify=verify, base=base)


__all__ = ["__version__", "load_bundle"]
