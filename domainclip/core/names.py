"""Names people type: the key two class names collide on, and collision-free file names."""
from __future__ import annotations

import re
import unicodedata

_SLUG = re.compile(r"[^a-z0-9]+")


def name_key(name: str) -> str:
    """What a reader sees of a name: Unicode NFKC, invisible format characters (zero-width space,
    joiners, byte-order marks) removed, case-folded, whitespace runs collapsed and trimmed.
    ``Tumour``, ``tumour `` and ``tu\u200bmour`` share one key."""
    text = unicodedata.normalize("NFKC", str(name))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.casefold().split())


def colliding(names: list[str]) -> list[list[str]]:
    """Groups of two or more ``names`` that share one :func:`name_key`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name_key(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def file_slug(index: int, name: str, width: int = 2) -> str:
    """A collision-free file-name stem for item ``index`` called ``name``: the zero-padded index
    plus an ASCII slug of the name (``03_ground_glass``); distinct indexes never collide."""
    ascii_name = unicodedata.normalize("NFKD", name_key(name)).encode("ascii", "ignore").decode()
    slug = _SLUG.sub("_", ascii_name).strip("_")[:40]
    return f"{index:0{width}d}_{slug}" if slug else f"{index:0{width}d}"
