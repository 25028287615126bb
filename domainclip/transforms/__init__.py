"""Pure intensity/spatial functions and the read -> tensor pipeline."""
from domainclip.transforms.intensity import apply_window, bands_to_rgb, percentile_scale
from domainclip.transforms.pipeline import DomainOptions, Preprocess, to_tensor, to_unit_range

__all__ = ["DomainOptions", "Preprocess", "apply_window", "bands_to_rgb", "percentile_scale", "to_tensor", "to_unit_range"]
