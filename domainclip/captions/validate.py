"""Validate generated captions: on-topic, sane length, unique, not naming another class, no PHI."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from domainclip.data.identifiers import PHI_PATTERNS, norm  # noqa: F401 - PHI_PATTERNS re-exported


def mentions(text: str, names: list[str]) -> bool:
    """Whether ``text`` contains any of ``names`` as whole words."""
    t = f" {re.sub(r'[^a-z0-9 ]', ' ', norm(text))} "
    return any(f" {re.sub(r'[^a-z0-9 ]', ' ', norm(n)).strip()} " in t for n in names if n.strip())


def phi_hit(text: str, identifiers: tuple[str, ...] = ()) -> str | None:
    """Name of the first PHI pattern (or identifying value) found in ``text``."""
    for name, pattern in PHI_PATTERNS.items():
        if pattern.search(text):
            return name
    lowered = norm(text)
    for value in identifiers:
        if value and norm(value) in lowered:
            return "identifier"
    return None


@dataclass
class CaptionRules:
    """Acceptance rules for generated captions."""

    min_words: int = 4
    max_words: int = 40
    identifiers: tuple[str, ...] = ()


@dataclass
class Verdicts:
    """Accepted captions and rejection counts by reason."""

    accepted: list[str] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)


def validate_captions(lines: list[str], own: list[str], others: list[str], rules: CaptionRules,
                      seen: set[str] | None = None) -> Verdicts:
    """Keep lines that name the class (or a synonym), are 4-40 words, are new, do not name
    another class, and match no PHI pattern. ``others``: names and synonyms of other classes."""
    out, seen = Verdicts(), set() if seen is None else seen
    for line in lines:
        words = len(line.split())
        if phi_hit(line, rules.identifiers):
            reason = "phi"
        elif not mentions(line, own):
            reason = "off_topic"
        elif not rules.min_words <= words <= rules.max_words:
            reason = "length"
        elif norm(line) in seen:
            reason = "duplicate"
        elif mentions(line, [o for o in others if not mentions(o, own)]):
            reason = "contradiction"
        else:
            seen.add(norm(line))
            out.accepted.append(line)
            continue
        out.rejected[reason] += 1
    return out
