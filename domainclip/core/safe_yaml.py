"""Bounded YAML for user data (data cards): plain data, and a bounded amount of work.

PyYAML's safe loader refuses tags that build objects, but a 1.6 KB file of nested anchors still
expands to millions of nodes (a "billion laughs" alias bomb), deep nesting overflows the Python
stack, and a duplicate key silently keeps the last value. Cards are small, hand-written data, so
this loader refuses all three outright, with the file size and the text encoding checked first.
Refusals raise ``CardError`` naming the file, the line and what to do; none takes more than the
time to scan the file once.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from domainclip.core.errors import CardError

MAX_BYTES = 1 << 20  # a card is a few KB; anything over 1 MiB is not a card
MAX_DEPTH = 32  # a card nests about 4 levels deep


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without aliases, with a nesting limit and duplicate keys refused."""

    def __init__(self, stream, source: str):
        super().__init__(stream)
        self.source, self.depth = source, 0

    def _refuse(self, node_or_mark, what: str) -> None:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        raise CardError(f"{self.source}: line {mark.line + 1}: {what}")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._refuse(event, f"YAML alias '*{event.anchor}' is not allowed in a data card; "
                                "write the value out in full")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._refuse(self.peek_event(), f"nesting deeper than {MAX_DEPTH} levels; a data card is a shallow mapping")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                self._refuse(key_node, "a mapping key must be a plain value")
            if key in seen:
                self._refuse(key_node, f"key '{key}' appears twice in the same mapping (first on line "
                                       f"{seen[key] + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: Path, what: str = "data card"):
    """Parse a small YAML data file with bounded work; ``CardError`` on anything else."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise CardError(f"{path}: {size} bytes is too large for a {what} (limit {MAX_BYTES}); "
                        "list samples in the manifest, not in the card")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                        f"save the {what} as UTF-8") from None
    if "\x00" in text:
        raise CardError(f"{path}: contains a NUL byte; a {what} is plain text")
    loader = _BoundedLoader(text, str(path))
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise CardError(f"{path}: nesting too deep for a {what}") from None
    finally:
        loader.dispose()
