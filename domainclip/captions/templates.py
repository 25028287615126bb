"""Caption templates as data: render captions per class for training and zero-shot prompts."""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from domainclip.cards.schema import DataCard
from domainclip.core.errors import ConfigError

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


def join_names(names: list[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    names = [_humanise(n) for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conj} {names[-1]}"


def caption_fields(reader_options: dict) -> dict[str, str]:
    """Caption fields from the card's reader options alone (the window a CT is shown in, the µm/px
    tiles are read at), so captions are a pure function of the card and its records: training,
    ``captions preview``, ``export-review`` and the shard builder render the same ones. A
    whitelist: identifiers never pass."""
    out = {}
    window = reader_options.get("window")
    if isinstance(window, str) and window not in ("file", "none"):
        out["window"] = f"{window.replace('_', ' ')}-window"
    mpp = reader_options.get("mpp")
    if isinstance(mpp, (int, float)) and not isinstance(mpp, bool) and mpp > 0:
        out["magnification"] = f"{float(mpp):g} µm/px"
    return out


def render(template: str, label: str, card: DataCard, description: str, fields: dict | None = None) -> str | None:
    """Fill one template; ``None`` when it needs a field this card does not provide."""
    values = {
        "label": _humanise(label),
        "description": description,
        "modality": card.modality,
        "body_part": card.body_part,
        **card.captions.metadata,
        **(fields or {}),
    }
    if any(not values.get(f) for f in _fields(template)):
        return None
    text = template.format(**values)
    return text[0].upper() + text[1:]


def label_captions(card: DataCard, templates: list[str], labels: tuple[int, ...], fields: dict | None = None,
                   absent_findings: bool = False) -> list[Caption]:
    """Captions for one label set: each synonym for a single label; joined names for several."""
    if len(labels) == 1:
        cls = card.classes[labels[0]]
        variants = [(name, cls.description) for name in [cls.name, *cls.synonyms]]
    else:
        chosen = [card.classes[i] for i in labels]
        variants = [(join_names([c.name for c in chosen]), "; ".join(c.description for c in chosen if c.description))]
    absent = [c.name for i, c in enumerate(card.classes) if i not in labels]
    suffix = f" No {join_names(absent, 'or')}." if absent_findings and card.task == "multi_label" and absent else ""
    caps, seen = [], set()
    for name, description in variants:
        for t in templates:
            text = render(t, name, card, description, fields)
            if text and text not in seen:
                seen.add(text)
                caps.append(Caption(text + suffix, labels[0] if len(labels) == 1 else -1, "template", t))
    return caps


def class_captions(card: DataCard, templates: list[str]) -> list[list[Caption]]:
    """For each class, every template rendered with its name and each synonym (zero-shot prompts)."""
    out = []
    for ci, cls in enumerate(card.classes):
        caps = label_captions(card, templates, (ci,))
        if not caps:
            raise ConfigError(f"no template of the set renders for class '{cls.name}'; add a description or body_part")
        out.append(caps)
    return out
