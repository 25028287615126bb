"""The LightningModule: built from plain hyper-parameters, so a checkpoint rebuilds it."""
from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from domainclip.methods.base import PromptSet
from domainclip.model import AdaptedModel
from domainclip.training.grad_cache import all_reduce_gradients, grad_cache_backward
from domainclip.training.losses import LOSSES, global_mean
from domainclip.training.reliability.guard import NonFiniteGuard


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


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy for class indices, binary cross-entropy for multi-hot targets; the mean over
    the valid samples of the global batch."""
    if labels.ndim == 2:
        per_sample = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(1)
    else:
        per_sample = F.cross_entropy(logits, labels, reduction="none")
    return global_mean(per_sample, valid)


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
                 input_adapter: dict | None = None, guard: NonFiniteGuard | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["guard"])
        self.loss_fn = LOSSES.get(loss["name"])  # validate names before loading any weights
        self.loss_options = {k: v for k, v in loss.items() if k not in ("name", "grad_cache")}
        self.grad_cache = int(loss.get("grad_cache") or 0)  # chunk size; 0 = plain backward
        self.guard = guard  # skips (or halts on) non-finite steps on every rank together; None = off
        self._batch_ids: list[int] = []
        self._val_classes: torch.Tensor | None = None  # class embeddings of the current validation epoch
        self.automatic_optimization = not self.grad_cache
        rows = [r for prompts in class_prompts for r in prompts]
        self.model = AdaptedModel.build(tower, method, class_names, [captions[r] for r in rows],
                                        [k for k, p in enumerate(class_prompts) for _ in p], input_adapter)
        tokens = self.tower.tokenize(captions)
        self.register_buffer("caption_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("caption_mask", tokens["attention_mask"], persistent=False)
        self.class_names = list(class_names)
        self.strict_loading = False  # checkpoints hold only trained tensors

    @property
    def tower(self):
        """The adapted model's tower."""
        return self.model.tower

    @property
    def method(self):
        """The adapted model's method (a pure adapter)."""
        return self.model.method

    def prompt_set(self) -> PromptSet:
        """The template prompt ensemble (the same templates as the captions)."""
        return self.model.prompt_set()

    def class_embeddings(self) -> torch.Tensor:
        """(K, D) class embeddings of the method (template ensemble unless it learns prompts)."""
        return self.model.class_embeddings()

    def logits(self, batch: dict, zero_shot: bool = False) -> torch.Tensor:
        """(B, K) class logits of the method for a batch; ``zero_shot`` uses the template
        prompt ensemble whatever the method (the baseline)."""
        return self.model.logits(batch, zero_shot=zero_shot)

    def pick_captions(self, pools: torch.Tensor, indexes: torch.Tensor, epoch: int) -> torch.Tensor:
        """Caption row per sample; validation passes ``epoch=0`` so its captions are fixed."""
        seed, bank = self.hparams.seed, self.hparams.pools
        # one device-to-host copy per tensor, not one sync per sample (512 per step at batch 256 on a GPU)
        rows = [bank[p][caption_choice(seed, epoch, i, len(bank[p]))] for p, i in zip(pools.tolist(), indexes.tolist())]
        return torch.tensor(rows, device=self.caption_ids.device)

    def text_embeddings(self, rows: torch.Tensor) -> torch.Tensor:
        """Encode each distinct caption once, then gather per sample."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        return self.model.embed_texts(self.caption_ids[unique], self.caption_mask[unique])[inverse]

    def loss(self, batch: dict, epoch: int) -> torch.Tensor:
        """The training loss of a batch: the method's classification loss, or the contrastive loss
        of each image against its caption this epoch."""
        if self.method.objective == "classification":
            return classification_loss(*self.model.classification_inputs(batch))
        return self.pair_loss(*self.embed_pair(batch, epoch), batch)

    def embed_pair(self, batch: dict, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image embeddings and the embeddings of each sample's caption this epoch."""
        img = self.model.embed_images(batch)
        return img, self.text_embeddings(self.pick_captions(batch["pool"], batch["index"], epoch))

    def pair_loss(self, img: torch.Tensor, txt: torch.Tensor, batch: dict) -> torch.Tensor:
        """The contrastive loss of the (globally gathered) pairs; same pool = same label set, which
        the label-aware loss treats as positives."""
        return self.loss_fn(img, txt, self.tower.logit_scale, labels=batch["pool"], logit_bias=self.tower.logit_bias,
                            valid=batch.get("valid"), **self.loss_options)

    def on_train_epoch_start(self) -> None:
        """Shard streams learn the epoch here (Lightning sets it only on samplers)."""
        dm = getattr(self.trainer, "datamodule", None)
        stream = getattr(dm, "train_sampler", None)
        if stream is not None and isinstance(stream, torch.utils.data.IterableDataset):
            stream.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        ids = batch["index"][batch["valid"]] if "valid" in batch else batch["index"]
        self._batch_ids = ids.tolist()
        loss = self._grad_cache_step(batch) if self.grad_cache else self.loss(batch, self.current_epoch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        self.log("train/logit_scale", self.tower.logit_scale.detach(), batch_size=len(batch["label"]))
        return loss

    def _grad_cache_step(self, batch: dict) -> torch.Tensor:
        """One optimizer step with GradCache (manual optimization): the loss of the full batch
        with the activation memory of ``loss.grad_cache`` samples."""
        opt, sched = self.optimizers(), self.lr_schedulers()
        model = self.trainer.strategy.model
        no_sync = getattr(model, "no_sync", nullcontext)
        loss = grad_cache_backward(self, batch, self.current_epoch, self.grad_cache, self.manual_backward, no_sync)
        params = [p for p in self.parameters() if p.requires_grad]
        all_reduce_gradients(params)
        if self.guard is None or self.guard.step_allowed(loss, params, self.global_step, self._batch_ids):
            opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """With a guard: forward and backward first, then step only if every rank's loss and
        gradients are finite (decided together; see ``reliability.guard``)."""
        if self.guard is None or self.guard.mode == "off" or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.guard.step_allowed(loss, params, self.global_step, self._batch_ids):
            optimizer.step()

    def on_validation_epoch_start(self) -> None:
        self._val_classes = self.model.fixed_class_embeddings()  # the weights are fixed for the whole epoch

    def validation_step(self, batch, batch_idx):
        n = len(batch["label"])
        logits = self.model.logits(batch, class_embeddings=self._val_classes)
        self.log("val/loss", self.loss(batch, 0), prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/top1", hit_rate(logits, batch["label"]), prog_bar=True, batch_size=n, sync_dist=True)

    def make_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the trainable parameters (heads at ``head_lr``). PyTorch's fused kernel is
        used where every parameter allows it: one pass per tensor instead of a dozen small ops
        (4.5x faster steps for a 150M-parameter CLIP on CPU)."""
        heads = {id(t) for t in self.tower.head_state_dict().values()}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in heads]},
                  {"params": [p for p in params if id(p) in heads], "lr": self.method.head_lr or self.method.lr}]
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g.setdefault("lr", self.method.lr)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=self.method.lr, weight_decay=self.method.weight_decay, fused=fused or None)

    def configure_optimizers(self):
        opt = self.make_optimizer()
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable tensors: the frozen base weights come from the tower's source."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
