"""A reference task for WiSE-FT: zero-shot top-1 of a tower on another card's test split."""
from __future__ import annotations

import torch

from domainclip.captions.build import prepare_captions
from domainclip.data import ImageDataset, load_card_data
from domainclip.methods.base import PromptSet, ensemble, scaled_similarity
from domainclip.transforms.pipeline import DomainOptions


class ReferenceZeroShot:
    """Zero-shot top-1 of a tower on another card's test split, with that card's templates
    (the same captions its own run would build)."""

    def __init__(self, card_ref: str):
        self.data = load_card_data(card_ref)
        bank, _ = prepare_captions(self.data)
        self.prompts = [bank.texts[r] for rows in bank.class_prompts for r in rows]
        self.labels = torch.tensor([k for k, rows in enumerate(bank.class_prompts) for _ in rows])
        self.pixels = None

    @torch.inference_mode()
    def top1(self, tower) -> float:
        """The tower's zero-shot top-1 on the reference test split (pixels read once)."""
        card, recs = self.data.card, self.data.splits["test"]
        if self.pixels is None:
            ds = ImageDataset(recs, card.reader.name, card.reader.options, DomainOptions.from_dict(card.transforms),
                              tower.preprocess, len(card.classes))
            self.pixels = torch.stack([ds.load(i) for i in range(len(ds))])
        tok = tower.tokenize(self.prompts)
        prompts = PromptSet(tok["input_ids"], tok["attention_mask"], self.labels, self.data.class_names)
        classes = ensemble(tower.encode_text(prompts.input_ids, prompts.attention_mask), prompts.labels,
                           prompts.num_classes)
        image = torch.nn.functional.normalize(tower.encode_image(self.pixels), dim=-1)
        logits = scaled_similarity(tower, image, classes)
        return float((logits.argmax(-1) == torch.tensor([r.label for r in recs])).float().mean())

