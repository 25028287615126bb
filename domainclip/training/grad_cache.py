"""Gradient caching (GradCache, Gao et al. 2021) for contrastive losses.

Gradient accumulation splits a batch into micro-batches whose losses are computed separately, so
each sample only meets the negatives of its own micro-batch. GradCache keeps every negative of
the full batch with the memory of one micro-batch:

1. embed every chunk without a graph (recording the RNG state of each chunk);
2. compute the loss on the full set of embeddings and backpropagate to the embeddings only;
3. re-embed each chunk with a graph (same RNG state, so dropout repeats) and backpropagate the
   cached embedding gradients into the towers.

The resulting parameter gradients equal those of the full-batch loss.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from domainclip.core.distributed import world
from domainclip.core.errors import ConfigError


def split_batch(batch: dict, chunk: int) -> list[dict]:
    """The batch cut into consecutive chunks of at most ``chunk`` samples."""
    n = len(batch["label"])
    return [{k: v[s : s + chunk] for k, v in batch.items()} for s in range(0, n, chunk)]


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def grad_cache_backward(task, batch: dict, epoch: int, chunk: int,
                        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward, no_sync=nullcontext) -> torch.Tensor:
    """Backpropagate the full-batch contrastive loss of ``batch`` chunk by chunk; returns the loss.

    ``backward`` is ``LightningModule.manual_backward`` in training; ``no_sync`` the DDP context
    that defers gradient all-reduce (the caller reduces once after the last chunk).
    """
    if task.method.objective != "contrastive":
        raise ConfigError("loss.grad_cache applies to contrastive objectives only; for classification methods "
                          "use trainer.accumulate_grad_batches, which is exact there")
    chunks, states = split_batch(batch, chunk), []
    with torch.no_grad():
        parts = []
        for c in chunks:
            states.append(rng_state())
            parts.append(task.embed_pair(c, epoch))
    img = torch.cat([p[0] for p in parts]).requires_grad_(True)
    txt = torch.cat([p[1] for p in parts]).requires_grad_(True)
    with no_sync():
        loss = task.pair_loss(img, txt, batch)
        backward(loss)
        start = 0
        after = rng_state()
        for c, state in zip(chunks, states):
            set_rng_state(state)
            i, t = task.embed_pair(c, epoch)
            end = start + i.shape[0]
            backward((i * img.grad[start:end]).sum() + (t * txt.grad[start:end]).sum())
            start = end
        set_rng_state(after)
    return loss.detach()


def all_reduce_gradients(params) -> None:
    """Average gradients over ranks (after ``no_sync`` backward passes); a no-op on one process."""

    _, size = world()
    if size == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= size
