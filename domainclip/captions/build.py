"""One entry point for captions: templates, optional LLM expansion, review approvals."""
from __future__ import annotations

from domainclip.captions.bank import CaptionBank, build_bank
from domainclip.captions.llm import LLMSettings, expand
from domainclip.captions.review import load_approved
from domainclip.captions.templates import template_set_for
from domainclip.core.distributed import computed_once
from domainclip.core.errors import ConfigError
from domainclip.core.paths import cache_dir
from domainclip.data.identifiers import identifying_values  # the same values the export audit uses


def prepare_captions(data, template_set: str | None = None, llm: dict | None = None,
                     absent_findings: bool = False) -> tuple[CaptionBank, dict]:
    """Build the caption bank for a loaded card; returns it with a report for metrics.json."""
    set_name, templates = template_set_for(data.card, template_set)
    report = {"template_set": set_name}
    expansion = None
    if llm and llm.get("path"):
        settings = LLMSettings(**llm)
        cache_file = cache_dir() / "captions" / f"{data.card.name}.jsonl"

        with computed_once(cache_file):  # one process generates, the others then read the cache
            expansion = expand(data.card, data.digest, settings, cache_file, identifiers=tuple(identifying_values(data)))
        report["llm"] = {"model": expansion.model, "prompt_hash": expansion.prompt_hash,
                         "accepted": sum(len(v) for v in expansion.captions.values()),
                         "rejected": expansion.rejected, "cache_hits": expansion.cache_hits,
                         "generated_classes": expansion.generated,
                         "filled_by_templates": [data.card.classes[i].name for i, v in expansion.captions.items()
                                                 if len(v) < settings.n]}
    approved = load_approved(data.card.name) if data.card.captions.require_review else None
    if data.card.captions.require_review and approved is None:
        raise ConfigError(f"card '{data.card.name}' sets captions.require_review: true but was never reviewed; run "
                          f"'python -m domainclip.captions export-review {data.path}' then 'import-review'")
    bank = build_bank(data.card, data.splits, templates, expansion, approved, absent_findings)
    report.update(bank.stats, reviewed=approved is not None)
    return bank, report
