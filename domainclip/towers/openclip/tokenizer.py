"""open_clip's tokenizers without open_clip: the CLIP byte-pair encoding (``SimpleTokenizer``) read
by transformers' ``CLIPTokenizer`` from the same vocabulary file, and Hugging Face tokenizers for
Hugging Face text towers. Both return open_clip's ids: cleaned text, ``context_length`` tokens,
truncated with the end token kept, padded with the pad id."""
from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import ftfy
import torch

from domainclip.core.errors import ConfigError

# OpenAI CLIP's byte-pair vocabulary (MIT licence), as open_clip ships it
BPE_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 49152 - 256 - 2
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def basic_clean(text: str) -> str:
    """open_clip's cleaning: ``ftfy.fix_text`` (mojibake repaired, and typographic quotes and
    apostrophes, ligatures and full-width characters made plain, as reports typed in word
    processors need: "Crohn’s" tokenises as "Crohn's"), HTML entities unescaped twice, whitespace
    runs to one space."""
    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


@lru_cache(maxsize=1)
def clip_bpe_tokenizer():
    """transformers' ``CLIPTokenizer`` over OpenAI's BPE merges, with open_clip's token ids
    (byte symbols, their end-of-word forms, the merges, then start and end of text)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = gzip.open(BPE_FILE).read().decode("utf-8").split("\n")[1:N_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])


def hf_tokenizer(directory: Path | None, name: str | None):
    """A Hugging Face tokenizer from the checkpoint directory (as open_clip's ``local-dir``
    loading reads it), else from the hub cache (offline) under ``hf_tokenizer_name``."""
    from transformers import AutoTokenizer

    if directory is not None and any((directory / f).is_file() for f in TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(str(directory))
    try:
        return AutoTokenizer.from_pretrained(str(name), local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached
        raise ConfigError(f"tokenizer {name!r} is neither beside the checkpoint nor in the Hugging Face hub cache; "
                          f"download it once (huggingface-cli download {name}) or save it into the checkpoint "
                          "directory") from None


class OpenClipTokenizer:
    """Callable like open_clip's tokenizer: texts -> (N, context_length) ids; also exposes the
    wrapped tokenizer's ``tokenize`` and ``convert_tokens_to_ids`` (prompt learning uses them)."""

    def __init__(self, tokenizer, context_length: int, lower: bool, pad_id: int):
        self.tokenizer, self.context_length, self.lower, self.pad_id = tokenizer, int(context_length), lower, pad_id

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)

    def convert_tokens_to_ids(self, tokens):
        return self.tokenizer.convert_tokens_to_ids(tokens)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` as open_clip makes them and ``attention_mask`` (1 on real tokens)."""
        cleaned = [basic_clean(t).lower() if self.lower else basic_clean(t) for t in texts]
        enc = self.tokenizer(cleaned, padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        mask = enc["attention_mask"]
        return {"input_ids": enc["input_ids"].masked_fill(mask == 0, self.pad_id), "attention_mask": mask}


def build_tokenizer(text_cfg: dict, directory: Path | None) -> OpenClipTokenizer:
    """open_clip's choice: a Hugging Face tokenizer when the config names one, else CLIP's BPE."""
    context = int(text_cfg.get("context_length", 77))
    name = text_cfg.get("hf_tokenizer_name") or None
    if name:
        tok = hf_tokenizer(directory, name)
        return OpenClipTokenizer(tok, context, lower=False, pad_id=int(tok.pad_token_id or 0))
    return OpenClipTokenizer(clip_bpe_tokenizer(), context, lower=True, pad_id=0)
