"""Contrastive losses under torch.distributed: 2 gloo processes x batch B give the loss and the
gradients of 1 process x batch 2B, with and without local_loss."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from domainclip.training.losses import LOSSES, global_mean

B, D, WORLD = 4, 8, 2
CASES = list(itertools.product(["clip", "siglip", "label_aware"], [False, True]))


def make_data():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(WORLD * B, D, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(WORLD * B, D, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 2, 0])  # repeats within and across ranks
    return img, txt, labels


VALID = torch.tensor([True, True, True, True, True, False, True, False])  # padding on rank 1 only


def loss_and_grads(name, img, txt, labels, local_loss, valid=None):
    img, txt = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    loss = LOSSES.get(name)(img, txt, scale, labels=labels, logit_bias=bias, local_loss=local_loss, valid=valid)
    loss.backward()
    return loss.detach(), img.grad, txt.grad


def worker(rank: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    img, txt, labels = make_data()
    part = slice(rank * B, (rank + 1) * B)
    results = {}
    for name, local in CASES:
        loss, gi, gt = loss_and_grads(name, img[part], txt[part], labels[part], local)
        results[f"{name}/{local}"] = {"loss": loss, "gi": gi, "gt": gt}
        loss, gi, gt = loss_and_grads(name, img[part], txt[part], labels[part], local, VALID[part])
        results[f"{name}/{local}/padded"] = {"loss": loss, "gi": gi, "gt": gt}
    per_sample = torch.arange(B, dtype=torch.float64, requires_grad=True) + rank * B
    results["mean"] = global_mean(per_sample ** 2, VALID[part]).detach()
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
@pytest.mark.parametrize("name, local_loss", CASES)
def test_two_ranks_equal_one_global_batch(ranks, name, local_loss):
    img, txt, labels = make_data()
    loss, gi, gt = loss_and_grads(name, img, txt, labels, local_loss=False)
    per_rank = [r[f"{name}/{local_loss}"] for r in ranks]
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD  # what DDP's gradient averaging optimises
    assert abs(float(mean_loss - loss)) < 1e-6
    if not local_loss:
        assert all(abs(float(r["loss"] - loss)) < 1e-6 for r in per_rank)
    for rank, r in enumerate(per_rank):
        part = slice(rank * B, (rank + 1) * B)
        # all-gather's backward sums each rank's contribution; DDP then divides by the world size
        torch.testing.assert_close(r["gi"] / WORLD, gi[part], atol=1e-6, rtol=0)
        torch.testing.assert_close(r["gt"] / WORLD, gt[part], atol=1e-6, rtol=0)


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
@pytest.mark.parametrize("name, local_loss", CASES)
def test_padding_samples_are_left_out_of_the_global_loss(ranks, name, local_loss):
    """Ranks padded by the sampler (valid=False) give the loss of the real samples alone."""
    img, txt, labels = make_data()
    loss, gi, gt = loss_and_grads(name, img[VALID], txt[VALID], labels[VALID], local_loss=False)
    per_rank = [r[f"{name}/{local_loss}/padded"] for r in ranks]
    assert abs(float(sum(r["loss"] for r in per_rank) / WORLD - loss)) < 1e-6
    grads_i = torch.cat([r["gi"] for r in per_rank]) / WORLD
    grads_t = torch.cat([r["gt"] for r in per_rank]) / WORLD
    torch.testing.assert_close(grads_i[VALID], gi, atol=1e-6, rtol=0)
    torch.testing.assert_close(grads_t[VALID], gt, atol=1e-6, rtol=0)
    assert float(grads_i[~VALID].abs().max()) == 0.0 and float(grads_t[~VALID].abs().max()) == 0.0


def test_global_mean_over_ranks_is_the_mean_of_valid_samples(ranks):
    values = (torch.arange(WORLD * B, dtype=torch.float64) ** 2)[VALID]
    assert abs(float(sum(r["mean"] for r in ranks) / WORLD - values.mean())) < 1e-9
