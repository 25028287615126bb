"""Everything the pipeline needs from a data card: root, records, splits, captions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domainclip.cards.load import card_digest, confined, load_card
from domainclip.cards.manifest import Record, read_records
from domainclip.cards.schema import DataCard
from domainclip.cards.splits import assign_splits
from domainclip.demo import demo_root


@dataclass
class CardData:
    """A loaded card with its resolved root, records split by group, and digest."""

    card: DataCard
    path: Path
    root: Path
    digest: str
    splits: dict[str, list[Record]]

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split."""
        out = {}
        for split, recs in self.splits.items():
            row = {c: 0 for c in self.class_names}
            for r in recs:
                for li in r.labels:
                    row[self.class_names[li]] += 1
            out[split] = row
        return out


def card_root(card: DataCard, path: Path, demo_dir: Path | None = None) -> Path:
    """A demo card's generated folder, or the card's ``root`` relative to the card file."""
    if card.demo:
        return demo_root(card.demo, seed=0, root=demo_dir)
    return confined(path.parent, card.root, f"{path}: field 'root'") if card.root != "." else path.parent


def load_card_data(ref: str | Path, demo_dir: Path | None = None) -> CardData:
    """Load and validate a card, generate demo data if needed, read the manifest, split."""
    card, path = load_card(ref)
    root = card_root(card, path, demo_dir)
    records = read_records(card, root)
    return CardData(card=card, path=path, root=root, digest=card_digest(path), splits=assign_splits(records, card.split))
