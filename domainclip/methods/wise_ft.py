"""WiSE-FT: interpolate zero-shot and fine-tuned weights, sweep alpha, report what is retained."""
from __future__ import annotations

from pathlib import Path

import torch

from domainclip.methods.base import METHODS, Method, build_method


def _interpolate(params: dict[str, torch.nn.Parameter], theta0: dict, theta1: dict, alpha: float) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_((1 - alpha) * theta0[name] + alpha * theta1[name])


@METHODS.register("wise_ft")
class WiseFT(Method):
    """Fine-tune with an inner method (``full`` by default), then set the trained tensors to
    ``(1 - a) * zero_shot + a * fine_tuned`` for each ``a`` in ``alphas``; the best ``a`` on val is
    kept. The report lists, per ``a``, val and test top-1 and the zero-shot top-1 retained on a
    ``reference_card`` (another task the model should not forget), when one is given."""

    name = "wise_ft"

    def __init__(self, inner: str | dict = "lora", inner_options: dict | None = None,
                 alphas=(0.0, 0.25, 0.5, 0.75, 1.0), reference_card: str | None = None, **kwargs):
        super().__init__(**kwargs)
        spec = {"name": inner} if isinstance(inner, str) else dict(inner)
        shared = {k: v for k, v in kwargs.items() if k in ("lr", "weight_decay", "head_lr", "train_heads")}
        self.inner = build_method({**shared, **spec, **(inner_options or {})})
        self.alphas, self.reference_card = [float(a) for a in alphas], reference_card
        self.objective, self.export_files = self.inner.objective, self.inner.export_files
        self.lr, self.weight_decay = self.inner.lr, self.inner.weight_decay

    @property
    def image_backbone_frozen(self) -> bool:
        return self.inner.image_backbone_frozen

    def prepare(self, tower, class_names) -> None:
        self.inner.prepare(tower, class_names)

    def class_embeddings(self, tower, prompts, image_emb=None):
        return self.inner.class_embeddings(tower, prompts, image_emb)

    def logits(self, tower, batch, prompts):
        return self.inner.logits(tower, batch, prompts)

    def fit(self, task, datamodule, make_trainer) -> dict:
        from domainclip.evaluation import classification_metrics, task_logits

        params = {n: p for n, p in task.named_parameters() if p.requires_grad}
        theta0 = {n: p.detach().clone() for n, p in params.items()}
        inner_report = self.inner.fit(task, datamodule, make_trainer)
        theta1 = {n: p.detach().clone() for n, p in params.items()}
        reference = ReferenceZeroShot(self.reference_card) if self.reference_card else None
        sweep = {}
        for alpha in self.alphas:
            _interpolate(params, theta0, theta1, alpha)
            row = {}
            for split in ("val", "test"):
                logits, targets = task_logits(task, datamodule._loader(split, shuffle=False))
                row[split] = classification_metrics(logits, targets, task.class_names)["top1"]
            if reference is not None:
                row["reference_zero_shot"] = reference.top1(task.tower)
            sweep[str(alpha)] = row
        best = max(self.alphas, key=lambda a: (sweep[str(a)]["val"], a))
        _interpolate(params, theta0, theta1, best)
        report = {"alpha": best, "sweep": sweep, "inner": inner_report}
        if reference is not None:
            zs = sweep[str(self.alphas[0])]["reference_zero_shot"] if self.alphas[0] == 0 else None
            report["retained_zero_shot"] = {a: (r["reference_zero_shot"] / zs if zs else None) for a, r in sweep.items()}
        return report

    def export(self, tower, out_dir: Path) -> None:
        self.inner.export(tower, out_dir)

    def load(self, tower, bundle_dir: Path, class_names) -> None:
        self.inner.load(tower, bundle_dir, class_names)


class ReferenceZeroShot:
    """Zero-shot top-1 of a tower on another card's test split, with that card's templates."""

    def __init__(self, card_ref: str):
        from domainclip.captions.build import prepare_captions
        from domainclip.data import load_card_data

        self.data = load_card_data(card_ref)
        bank, _ = prepare_captions(self.data)
        self.prompts = [bank.texts[r] for rows in bank.class_prompts for r in rows]
        self.labels = torch.tensor([k for k, rows in enumerate(bank.class_prompts) for _ in rows])
        self.pixels = None

    @torch.inference_mode()
    def top1(self, tower) -> float:
        from domainclip.data import ImageDataset
        from domainclip.methods.base import Method, PromptSet
        from domainclip.transforms.pipeline import DomainOptions

        card, recs = self.data.card, self.data.splits["test"]
        if self.pixels is None:
            ds = ImageDataset(recs, card.reader.name, card.reader.options, DomainOptions.from_dict(card.transforms),
                              tower.preprocess, len(card.classes))
            self.pixels = torch.stack([ds.load(i) for i in range(len(ds))])
        tok = tower.tokenize(self.prompts)
        prompts = PromptSet(tok["input_ids"], tok["attention_mask"], self.labels, self.data.class_names)
        logits = Method().logits(tower, {"pixels": self.pixels}, prompts)
        return float((logits.argmax(-1) == torch.tensor([r.label for r in recs])).float().mean())
