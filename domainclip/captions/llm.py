"""Caption expansion with a local causal LM (UniMed-CLIP style), cached and validated."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from domainclip.captions.cache import CaptionCache
from domainclip.captions.validate import CaptionRules, validate_captions

PROMPT = (
    "You are a {modality} expert writing training captions for an image-text model.\n"
    "Write {n} different, short, factual captions for a {modality} image of the {body_part} showing "
    "{label} ({description}). Each caption must name {label}. Do not invent patient details, dates "
    "or identifiers. One caption per line.\n1."
)


class Generator(Protocol):
    def __call__(self, prompt: str, seed: int) -> str: ...


@dataclass
class LLMSettings:
    """``captions.llm`` config: a local model directory, captions per class, seed, length."""

    path: str | None = None
    n: int = 5
    seed: int = 0
    max_new_tokens: int = 160
    temperature: float = 0.8
    min_words: int = 4
    max_words: int = 40


@dataclass
class Expansion:
    """Accepted LLM captions per class, rejection counts and provenance."""

    captions: dict[int, list[str]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    model: str = ""
    prompt_hash: str = ""
    cache_hits: int = 0
    generated: int = 0


def prompt_for(card, class_index: int, n: int) -> str:
    """The UniMed-style prompt for one class."""
    cls = card.classes[class_index]
    return PROMPT.format(modality=card.modality, body_part=card.body_part or "body", n=n,
                         label=cls.name.replace("_", " "), description=cls.description or cls.name)


def parse_lines(text: str) -> list[str]:
    """Split generated text into candidate captions (numbering, bullets and quotes removed)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*((\d+[.)]|[-*•])\s*)+", "", line).strip().strip('"').strip()
        if line:
            out.append(line)
    return out


def hf_generator(settings: LLMSettings) -> Generator:
    """A deterministic text generator over a local transformers causal LM directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    tok = AutoTokenizer.from_pretrained(settings.path)
    model = AutoModelForCausalLM.from_pretrained(settings.path).eval()

    def generate(prompt: str, seed: int) -> str:
        import torch

        set_seed(seed)
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=settings.temperature, top_p=0.95,
                                 max_new_tokens=settings.max_new_tokens, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    return generate


def model_id(path: str) -> str:
    """The model's identity for cache keys: its path plus a digest of its config."""
    cfg = Path(path) / "config.json"
    digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:12] if cfg.is_file() else "nocfg"
    return f"{Path(path).name}@{digest}"


def cache_key(card_digest: str, class_name: str, model: str, prompt_hash: str, seed: int) -> str:
    return hashlib.sha256(json.dumps([card_digest, class_name, model, prompt_hash, seed]).encode()).hexdigest()[:24]


def expand(card, card_digest: str, settings: LLMSettings, cache_file: Path | None,
           make_generator: Callable[[LLMSettings], Generator] = hf_generator, identifiers: tuple[str, ...] = ()) -> Expansion:
    """Generate, parse and validate ``n`` captions per class; reuse the JSONL cache when it has them.

    The model is loaded only if some class is missing from the cache.
    """

    cache = CaptionCache(cache_file)
    model = model_id(settings.path)
    prompts = {i: prompt_for(card, i, settings.n) for i in range(len(card.classes))}
    phash = hashlib.sha256("\n".join(prompts.values()).encode()).hexdigest()[:16]
    exp = Expansion(model=model, prompt_hash=phash)
    rules = CaptionRules(settings.min_words, settings.max_words, identifiers)
    generator, seen, rejected = None, set(), {}
    for i, cls in enumerate(card.classes):
        key = cache_key(card_digest, cls.name, model, phash, settings.seed)
        entry = cache.get(key)
        if entry is None:
            generator = generator or make_generator(settings)
            raw = parse_lines("1. " + generator(prompts[i], settings.seed + i))
            own = [cls.name, *cls.synonyms]
            others = [n for j, c in enumerate(card.classes) if j != i for n in (c.name, *c.synonyms)]
            verdict = validate_captions(raw, own, others, rules, seen)
            entry = {"class": cls.name, "model": model, "prompt_hash": phash, "seed": settings.seed,
                     "captions": verdict.accepted[: settings.n], "rejected": dict(verdict.rejected)}
            cache.put(key, entry)
            exp.generated += 1
        else:
            exp.cache_hits += 1
        exp.captions[i] = list(entry["captions"])
        for reason, n in entry["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
    exp.rejected = rejected
    return exp
