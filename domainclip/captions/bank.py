"""The caption bank: every distinct caption once, candidate pools per (labels, metadata), and
the zero-shot prompts per class, with provenance and review approvals applied."""
from __future__ import annotations

from dataclasses import dataclass, field

from domainclip.captions.llm import Expansion
from domainclip.captions.templates import Caption, caption_fields, class_captions, label_captions
from domainclip.cards.manifest import Record
from domainclip.core.errors import ConfigError


@dataclass
class CaptionBank:
    """``texts[i]`` with ``provenance[i]``; ``pools[p]`` lists the rows a sample of pool ``p`` draws
    from; ``pool_ids[split][j]`` is the pool of record ``j``; ``class_prompts[k]`` the rows of class k's
    zero-shot prompt ensemble."""

    texts: list[str] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)
    pools: list[list[int]] = field(default_factory=list)
    pool_ids: dict[str, list[int]] = field(default_factory=dict)
    class_prompts: list[list[int]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def row(self, text: str, provenance: dict) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
            self.provenance.append(provenance)
        return self._index[text]

    def __post_init__(self):
        self._index = {t: i for i, t in enumerate(self.texts)}


def _keep(caps: list[Caption], approved: set[str] | None) -> list[Caption]:
    return caps if approved is None else [c for c in caps if c.text in approved]


def _llm_captions(exp: Expansion | None, labels: tuple[int, ...]) -> list[Caption]:
    if exp is None or len(labels) != 1:
        return []
    return [Caption(t, labels[0], "llm", exp.prompt_hash) for t in exp.captions.get(labels[0], [])]


def _provenance(c: Caption, exp: Expansion | None) -> dict:
    if c.source == "llm":
        return {"source": "llm", "model": exp.model, "prompt_hash": exp.prompt_hash}
    return {"source": "template", "template": c.template}


def build_bank(card, splits: dict[str, list[Record]], templates: list[str], expansion: Expansion | None = None,
               approved: set[str] | None = None, absent_findings: bool = False) -> CaptionBank:
    """Render captions for every (label set, metadata) seen in ``splits``; approvals filter them."""
    bank, pool_index = CaptionBank(), {}
    fields = caption_fields(card.reader.options)
    for split, recs in splits.items():
        ids = []
        for rec in recs:
            key = (rec.labels, tuple(sorted(fields.items())))
            if key not in pool_index:
                caps = label_captions(card, templates, rec.labels, fields, absent_findings) + _llm_captions(expansion, rec.labels)
                caps = _keep(caps, approved)
                if not caps:
                    names = [card.classes[i].name for i in rec.labels]
                    raise ConfigError(f"no approved caption for {names}; run 'python -m domainclip.captions "
                                      "export-review' and 'import-review', or set captions.require_review: false")
                pool_index[key] = len(bank.pools)
                bank.pools.append([bank.row(c.text, _provenance(c, expansion)) for c in caps])
            ids.append(pool_index[key])
        bank.pool_ids[split] = ids
    for k, caps in enumerate(class_captions(card, templates)):
        caps = _keep(caps, approved) or caps
        bank.class_prompts.append([bank.row(c.text, _provenance(c, expansion)) for c in caps])
    sources = [p["source"] for p in bank.provenance]
    bank.stats = {"captions": len(bank.texts), "pools": len(bank.pools), "from_templates": sources.count("template"),
                  "from_llm": sources.count("llm")}
    return bank
