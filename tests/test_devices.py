"""Where the run's own inference passes run (``core.devices``); the accelerator side of it is
checked by ``tests/test_gpu.py`` (``-m gpu``), on a machine with CUDA."""
from __future__ import annotations

import torch
from torch import nn

from domainclip.core.devices import compute_device, placed


def test_compute_device_follows_the_accelerator_and_the_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    cuda = torch.cuda.is_available()
    assert compute_device("cpu") == torch.device("cpu")
    for accelerator in ("auto", "gpu", "cuda", "GPU"):
        assert compute_device(accelerator) == (torch.device("cuda", 1) if cuda else torch.device("cpu"))
    monkeypatch.delenv("LOCAL_RANK")
    assert compute_device("auto") == (torch.device("cuda", 0) if cuda else torch.device("cpu"))


def test_placed_keeps_the_module_as_it_is_for_none_or_its_own_device():
    module = nn.Linear(3, 2)
    weight = module.weight
    with placed(module, None) as inside:
        assert inside is module and module.weight is weight
    with placed(module, torch.device("cpu")):
        assert module.weight is weight
    with placed(nn.Identity(), torch.device("cpu")) as empty:  # no parameters: nothing to move
        assert isinstance(empty, nn.Identity)
