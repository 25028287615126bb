"""The model layer's owner of adapted weights (towers and methods live beside it)."""
from domainclip.model.adapted import AdaptedModel, scaled_similarity

__all__ = ["AdaptedModel", "scaled_similarity"]
