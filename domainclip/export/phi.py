"""PHI audit of everything a bundle will contain, run before anything is written."""
from __future__ import annotations

from dataclasses import dataclass

from domainclip.captions.validate import PHI_PATTERNS
from domainclip.core.errors import BundleError
from domainclip.data.identifiers import identifier_pattern, identifying_values, norm  # noqa: F401 - re-exported


@dataclass(frozen=True)
class Hit:
    location: str
    kind: str


def _walk(node, where: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def audit(texts: dict[str, object], identifiers: dict[str, str], free_text: set[str]) -> list[Hit]:
    """Scan ``texts`` (name -> str or nested data) for identifying values anywhere, and for generic
    PHI patterns in the free-text entries named in ``free_text`` (captions, class names, card text)."""
    hits = []
    idents = [(identifier_pattern(v), src) for v, src in identifiers.items() if norm(v)]
    for name, node in texts.items():
        for where, text in _walk(node, name):
            low = norm(text)
            for pattern, src in idents:
                if pattern.search(low):
                    hits.append(Hit(where, f"identifying value from {src}"))
            if name in free_text:
                for kind, pattern in PHI_PATTERNS.items():
                    if pattern.search(text):
                        hits.append(Hit(where, f"{kind}-like pattern"))
    return hits


def refuse_on_hits(hits: list[Hit], outcome: str = "the bundle was not written") -> None:
    """Raise one line naming where PHI was found (the first few places); nothing has been written."""
    if hits:
        listing = "; ".join(f"{h.location}: {h.kind}" for h in hits[:5])
        more = f" (and {len(hits) - 5} more)" if len(hits) > 5 else ""
        raise BundleError(f"PHI audit failed; {outcome}. {len(hits)} hit(s): {listing}{more}. "
                          "Remove the identifying text (captions, class names, card fields) and run again, or, if a "
                         "value is not identifying, list it under the card's phi.allow (recorded in the bundle).")


def card_free_text(card) -> dict:
    """The card's human-written texts that generic PHI patterns are checked against."""
    return {"description": card.description, "citation": card.citation,
            "classes": [{"name": c.name, "synonyms": c.synonyms, "description": c.description} for c in card.classes]}


def audit_run_texts(texts: dict[str, object], card, identifiers: dict[str, str]) -> None:
    """Before a run writes its first file: captions, prompts, hyper-parameters and config (``texts``)
    and the card's free text must hold no identifying value (they reach hparams.yaml, checkpoints,
    logs and the bundle)."""
    free = {"captions", "classes", "card_text"}
    hits = audit({**texts, "card_text": card_free_text(card)}, identifiers, free_text=free & (set(texts) | {"card_text"}))
    refuse_on_hits(hits, "nothing of the run was written (no logs, hyper-parameters or checkpoints)")
