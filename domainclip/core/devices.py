"""Where the run's own inference passes run: the feature cache, whole-slide tile features and
the evaluation's predictions happen outside Lightning's loops, so they pick the accelerator
themselves (Lightning places the model only inside ``fit`` and moves it back to the CPU after)."""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

ACCELERATED = ("auto", "gpu", "cuda")


def compute_device(accelerator: str = "auto") -> torch.device:
    """The device for inference passes under ``trainer.accelerator``: this process's CUDA device
    (``LOCAL_RANK``, as Lightning's launchers set it) when CUDA is present and the accelerator
    allows it, else the CPU."""
    if str(accelerator).lower() in ACCELERATED and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def to_device(value, device: torch.device | None):
    """A tensor, or a batch dict's tensors, on ``device`` (``None``: left where they are); other
    values as they are."""
    if device is None:
        return value
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value.to(device, non_blocking=True) if torch.is_tensor(value) else value


@contextmanager
def placed(module: nn.Module, device: torch.device | None):
    """Run the block with ``module`` on ``device`` (``None``: where it is), then put it back where
    it was."""
    first = next(module.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    if device is None or torch.device(device) == home:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)
