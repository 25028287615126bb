"""Bounded JSON for received files (bundle metadata, adapter configs, JSONL manifest rows).

``json.loads`` recurses once per nesting level, so a short line of 100 000 brackets raises a
``RecursionError`` traceback. Real records nest a few levels; the depth is measured with one
vectorised pass over the text (strings removed first) before the parser runs.
"""
from __future__ import annotations

import json
import re

import numpy as np

MAX_DEPTH = 64  # bundle metadata nests about 6 levels, a manifest row 2
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, outside its strings."""
    raw = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    if raw.size == 0:
        return 0
    steps = np.isin(raw, _OPEN).astype(np.int32) - np.isin(raw, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def loads_bounded(text: str, where: str, error: type[Exception], max_depth: int = MAX_DEPTH):
    """``json.loads(text)`` after refusing nesting deeper than ``max_depth``; any parse failure is
    ``error`` with one line naming ``where``."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{where}: JSON nested {depth} levels deep (limit {max_depth}); the file is damaged or hostile")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{where}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
