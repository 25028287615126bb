"""Scaling pieces that need no second process: the epoch sampler's exact partition, GradCache's
gradients, trainer configs for DDP/FSDP/precision, and the SLURM launcher config."""
from __future__ import annotations

import hydra
import pytest
import torch
from test_methods import make_task, toy_batch

from domainclip.core.errors import ConfigError
from domainclip.data.sampler import EpochShardSampler, PaddedDataset
from domainclip.training.grad_cache import grad_cache_backward


class Numbers(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": torch.tensor(i), "label": torch.tensor(i % 3)}


@pytest.mark.parametrize("n, world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_each_sample_once_per_epoch_across_ranks(n, world):
    ds = Numbers(n)
    samplers = [EpochShardSampler(ds, num_replicas=world, rank=r, seed=3) for r in range(world)]
    padded = PaddedDataset(ds, samplers[0].per_rank * world - n)
    for epoch in range(3):
        seen = []
        for s in samplers:
            s.set_epoch(epoch)
            items = [padded[i] for i in s]
            assert len(items) == samplers[0].per_rank  # equal batches on every rank: no collective hangs
            seen += [int(it["index"]) for it in items if it["valid"]]
        assert sorted(seen) == list(range(n))
    orders = []
    for epoch in (0, 1):
        samplers[0].set_epoch(epoch)
        orders.append(list(samplers[0]))
    assert orders[0] != orders[1] or n <= 2  # reshuffled per epoch


def test_sampler_order_depends_only_on_seed_and_epoch():
    ds = Numbers(20)
    a, b = EpochShardSampler(ds, seed=1), EpochShardSampler(ds, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b)
    assert list(EpochShardSampler(ds, seed=2)) != list(EpochShardSampler(ds, seed=1))


def grads(task):
    return {n: p.grad.clone() for n, p in task.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["clip", "siglip", "label_aware"])
def test_grad_cache_gives_full_batch_gradients(loss, tiny_clip_dir):
    """Chunks of 3 (uneven last chunk) give the gradients of the 16-sample loss, not of 3-sample losses."""
    method = {"name": "lora", "sides": ["image", "text"]}
    tower = {"name": "hf_clip", "path": str(tiny_clip_dir)}
    task = make_task(tower, method, loss)
    batch = toy_batch(task.tower.preprocess.size)
    full = task.loss(batch, 0)
    full.backward()
    expected = grads(task)
    task.zero_grad()
    cached = grad_cache_backward(task, batch, 0, chunk=3)
    got = grads(task)
    torch.testing.assert_close(cached.detach(), full.detach(), rtol=1e-6, atol=1e-6)  # a loss near 35: 1 ulp is 4e-6
    assert expected.keys() == got.keys() and len(got) > 4
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)
    # plain accumulation over chunks of 3 sees fewer negatives: different gradients
    task.zero_grad()
    for start in range(0, 16, 3):
        part = {k: v[start : start + 3] for k, v in batch.items()}
        (task.loss(part, 0) * len(part["label"]) / 16).backward()
    assert any(not torch.allclose(p.grad, expected[n], atol=1e-4) for n, p in task.named_parameters()
               if p.grad is not None)


def test_grad_cache_refuses_classification_methods(tiny_clip_dir):
    task = make_task({"name": "hf_clip", "path": str(tiny_clip_dir)}, {"name": "coop"})
    with pytest.raises(ConfigError, match="accumulate_grad_batches"):
        grad_cache_backward(task, toy_batch(task.tower.preprocess.size), 0, chunk=4)


def test_trainer_configs_compose_and_build(make_cfg):
    ddp = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    strategy = hydra.utils.instantiate(ddp.trainer.strategy)
    assert type(strategy).__name__ == "DDPStrategy"
    fsdp = make_cfg("trainer=fsdp", "trainer.strategy.activation_checkpointing=true")
    strategy = hydra.utils.instantiate(fsdp.trainer.strategy)
    from transformers.models.bert.modeling_bert import BertLayer
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    assert {BertLayer, CLIPEncoderLayer} <= set(strategy.kwargs["auto_wrap_policy"]._module_classes)
    assert strategy._activation_checkpointing_kwargs  # checkpointing policy passed through
    assert fsdp.trainer.precision == "bf16-mixed"
    for precision in ("bf16-mixed", "16-mixed", "32-true"):
        assert make_cfg(f"trainer.precision={precision}").trainer.precision == precision
    with pytest.raises(ConfigError, match="wrap_blocks"):
        from domainclip.training.strategies import fsdp_strategy

        fsdp_strategy(wrap_blocks=["transformers.models.bert.modeling_bert.NoSuchLayer"])


def test_slurm_launcher_config_composes(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "trainer=ddp"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == 2 and launcher.tasks_per_node == launcher.gpus_per_node


def test_activation_checkpointing_turns_on_in_hf_towers(tiny_clip_dir):
    from domainclip.towers import build_tower

    tower = build_tower({"name": "hf_clip", "path": str(tiny_clip_dir), "activation_checkpointing": True})
    assert tower.model.is_gradient_checkpointing
    tower = build_tower({"name": "hf_clip", "path": str(tiny_clip_dir)})
    assert not tower.model.is_gradient_checkpointing


class SlowTower(torch.nn.Module):
    """A frozen 'backbone' whose every forward is logged, to count how often features are computed."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def image_features(self, pixels):
        import time

        with open(self.log, "a") as fh:
            fh.write("computed\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one computes
        return pixels.flatten(1)


class Pixels(torch.utils.data.Dataset):
    pools = [0] * 4

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"pixels": torch.full((2,), float(i)), "label": torch.tensor(i)}


def cache_worker(rank, cache, log, out):
    from domainclip.data.features import cached_features

    ds, hit = cached_features(SlowTower(log), Pixels(), cache, "key", batch_size=4)
    torch.save({"features": ds.features, "hit": hit}, f"{out}/rank{rank}.pt")


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_feature_cache_is_computed_once_across_processes(tmp_path):
    import torch.multiprocessing as mp

    log = tmp_path / "log.txt"
    mp.spawn(cache_worker, args=(str(tmp_path / "cache"), str(log), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert log.read_text().count("computed") == 1  # one process computed, the other waited and read
    assert sorted(r["hit"] for r in results) == [False, True]
    assert torch.equal(results[0]["features"], results[1]["features"])
