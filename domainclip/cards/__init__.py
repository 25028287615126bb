"""Data cards: schema, loading with security checks, manifests and splits."""
from domainclip.cards.load import card_digest, load_card, resolve_card_path
from domainclip.cards.schema import DataCard

__all__ = ["DataCard", "card_digest", "load_card", "resolve_card_path"]
