"""Caption templates as data: render captions per class for training and zero-shot prompts."""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from domainclip.cards.schema import DataCard
from domainclip.errors import ConfigError

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")
MODALITY_TO_SET = {
    "ct": "ct", "mri": "mri", "mr": "mri", "xray": "xray", "x-ray": "xray", "cr": "xray", "dx": "xray",
    "us": "ultrasound", "ultrasound": "ultrasound", "fundus": "fundus", "pathology": "he_pathology",
    "h&e": "he_pathology", "ihc": "ihc", "dermatology": "dermatology", "satellite": "satellite_rgb",
    "satellite rgb": "satellite_rgb", "satellite multispectral": "satellite_multispectral", "astronomy": "astronomy",
}


@dataclass(frozen=True)
class Caption:
    """A caption with its provenance."""

    text: str
    class_index: int
    source: str = "template"
    template: str = ""


@lru_cache(maxsize=None)
def template_sets() -> dict[str, list[str]]:
    """All shipped template sets, by name."""
    return yaml.safe_load(TEMPLATES_FILE.read_text())


def template_set_for(card: DataCard, override: str | None = None) -> tuple[str, list[str]]:
    """The set named by ``override``, else the card's ``captions.template_set``, else by modality."""
    sets = template_sets()
    name = override or card.captions.template_set or MODALITY_TO_SET.get(card.modality.lower(), "generic")
    if name not in sets:
        raise ConfigError(f"unknown caption template set '{name}'; known sets: {', '.join(sorted(sets))}")
    return name, sets[name]


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _humanise(name: str) -> str:
    return name.replace("_", " ")


def render(template: str, label: str, card: DataCard, description: str) -> str | None:
    """Fill one template; ``None`` when it needs a field this card does not provide."""
    values = {
        "label": _humanise(label),
        "description": description,
        "modality": card.modality,
        "body_part": card.body_part,
        **card.captions.metadata,
    }
    if any(not values.get(f) for f in _fields(template)):
        return None
    text = template.format(**values)
    return text[0].upper() + text[1:]


def class_captions(card: DataCard, templates: list[str]) -> list[list[Caption]]:
    """For each class, every template rendered with its name and each synonym."""
    out = []
    for ci, cls in enumerate(card.classes):
        caps, seen = [], set()
        for name in [cls.name, *cls.synonyms]:
            for t in templates:
                text = render(t, name, card, cls.description)
                if text and text not in seen:
                    seen.add(text)
                    caps.append(Caption(text, ci, "template", t))
        if not caps:
            raise ConfigError(f"no template of the set renders for class '{cls.name}'; add a description or body_part")
        out.append(caps)
    return out
