"""Cross-rank feature exchange for contrastive losses (gradients flow back to every rank)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order; autograd sends gradients back to each rank
    (``torch.distributed.nn`` all-gather). A no-op on one process."""
    _, size = world()
    if size == 1:
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # the public autograd all-gather; its successor is still private API
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (e.g. labels) from every rank, without gradients."""
    _, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def launch_rank() -> int:
    """Global rank of this process as set by the launcher (torchrun, SLURM, Lightning's DDP
    subprocesses), known before any process group exists; 0 for a plain run."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def computed_once(target: Path):
    """Lock for work that produces ``target`` (a cache file or folder): under several processes
    (DDP ranks, nodes sharing a file system, parallel runs) the first to take the lock computes
    while the others wait, then find ``target`` present and only read it. No duplicate work, no
    half-written reads."""
    from filelock import FileLock

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target) + ".lock", timeout=-1)


def any_rank(flag: bool, device="cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one (an all-reduce MAX), so all
    ranks take the same branch; ``flag`` itself on one process."""
    if world()[1] == 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
