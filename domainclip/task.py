"""The LightningModule: built from plain hyper-parameters, so a checkpoint rebuilds it."""
from __future__ import annotations

import hashlib
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from domainclip.losses import LOSSES
from domainclip.methods import build_method
from domainclip.methods.base import Method, PromptSet, image_embeddings
from domainclip.towers import build_tower
from domainclip.towers.band_projection import BandProjection


def caption_choice(seed: int, epoch: int, index: int, n: int) -> int:
    """Seeded draw of one of ``n`` captions for sample ``index`` in ``epoch``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.1):
    """LR multiplier: linear warm-up over the first 10% of steps, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices, binary cross-entropy for multi-hot targets."""
    if labels.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def hit_rate(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of samples whose best class is (one of) their label(s)."""
    pred = logits.argmax(-1)
    hit = labels.gather(1, pred[:, None])[:, 0] > 0 if labels.ndim == 2 else pred == labels
    return hit.float().mean()


class ContrastiveTask(pl.LightningModule):
    """Adaptation of a tower with a method and a loss.

    ``captions`` holds every distinct caption once (tokenised once); a training image of caption
    pool ``p`` is paired with one of ``pools[p]`` per epoch (seeded); the zero-shot prompt ensemble of
    class ``k`` is ``class_prompts[k]``. Methods whose objective is ``classification`` train with
    cross-entropy over their class logits instead of the caption loss.
    """

    def __init__(self, tower: dict, method: dict, loss: dict, captions: list[str], pools: list[list[int]],
                 class_prompts: list[list[int]], class_names: list[str], seed: int = 0, max_epochs: int = 1,
                 input_adapter: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.loss_fn = LOSSES.get(loss["name"])  # validate names before loading any weights
        self.method = build_method(method)
        self.tower = build_tower(tower)
        if input_adapter:
            pre = self.tower.preprocess
            self.tower.input_adapter = BandProjection(input_adapter["in_channels"], input_adapter["init"], pre.mean, pre.std)
        self.method.prepare(self.tower, class_names)
        tokens = self.tower.tokenize(captions)
        self.register_buffer("caption_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("caption_mask", tokens["attention_mask"], persistent=False)
        rows = [r for prompts in class_prompts for r in prompts]
        self.register_buffer("prompt_rows", torch.tensor(rows), persistent=False)
        self.register_buffer("prompt_labels", torch.tensor([k for k, p in enumerate(class_prompts) for _ in p]),
                             persistent=False)
        self.class_names = list(class_names)
        self.strict_loading = False  # checkpoints hold only trained tensors

    def prompt_set(self) -> PromptSet:
        """The template prompt ensemble (the same templates as the captions)."""
        rows = self.prompt_rows
        return PromptSet(self.caption_ids[rows], self.caption_mask[rows], self.prompt_labels, self.class_names)

    def class_embeddings(self) -> torch.Tensor:
        """(K, D) class embeddings of the method (template ensemble unless it learns prompts)."""
        return self.method.class_embeddings(self.tower, self.prompt_set())

    def logits(self, batch: dict, zero_shot: bool = False) -> torch.Tensor:
        """(B, K) class logits of the method for a batch; ``zero_shot`` uses the template
        prompt ensemble whatever the method (the baseline)."""
        method = Method() if zero_shot else self.method
        return method.logits(self.tower, batch, self.prompt_set())

    def pick_captions(self, pools: torch.Tensor, indexes: torch.Tensor, epoch: int) -> torch.Tensor:
        """Caption row per sample; validation passes ``epoch=0`` so its captions are fixed."""
        seed, bank = self.hparams.seed, self.hparams.pools
        rows = [bank[int(p)][caption_choice(seed, epoch, int(i), len(bank[int(p)]))] for p, i in zip(pools, indexes)]
        return torch.tensor(rows, device=self.caption_ids.device)

    def text_embeddings(self, rows: torch.Tensor) -> torch.Tensor:
        """Encode each distinct caption once, then gather per sample."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        emb = self.tower.encode_text(self.caption_ids[unique], self.caption_mask[unique])
        return F.normalize(emb, dim=-1)[inverse]

    def _loss(self, batch: dict, epoch: int) -> torch.Tensor:
        if self.method.objective == "classification":
            return classification_loss(self.logits(batch), batch["label"])
        img = image_embeddings(self.tower, batch)
        txt = self.text_embeddings(self.pick_captions(batch["pool"], batch["index"], epoch))
        # same pool = same label set: the label-aware loss treats those pairs as positives
        return self.loss_fn(img, txt, self.tower.logit_scale, labels=batch["pool"], logit_bias=self.tower.logit_bias)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, self.current_epoch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        self.log("train/logit_scale", self.tower.logit_scale.detach(), batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch, batch_idx):
        n = len(batch["label"])
        self.log("val/loss", self._loss(batch, 0), prog_bar=True, batch_size=n)
        self.log("val/top1", hit_rate(self.logits(batch), batch["label"]), prog_bar=True, batch_size=n)

    def configure_optimizers(self):
        heads = {id(t) for t in self.tower.head_state_dict().values()}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in heads]},
                  {"params": [p for p in params if id(p) in heads], "lr": self.method.head_lr or self.method.lr}]
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g.setdefault("lr", self.method.lr)
        opt = torch.optim.AdamW(groups, lr=self.method.lr, weight_decay=self.method.weight_decay)
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable tensors: the frozen base weights come from the tower's source."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
