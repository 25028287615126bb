"""Export bundles and load them back without training code."""
from domainclip.export.bundle import write_bundle
from domainclip.export.loader import Predictor, load_bundle

__all__ = ["Predictor", "load_bundle", "write_bundle"]
