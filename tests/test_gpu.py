"""GPU checks (``python -m pytest -m gpu``), skipped without CUDA: one bf16 training step per method,
FSDP wraps and trains, and the losses' all-gather over NCCL when two GPUs are visible."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU = ["trainer.accelerator=gpu", "trainer.devices=1", "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
       "+trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", "eval.bootstrap=0",
       "export.enabled=false", "data.cache_features=false"]

METHODS = [["method=lora", "method.sides=[image,text]"], ["method=coop"], ["method=cocoop"], ["method=vpt"],
           ["method=full", "method.unlocked_layers=1"], ["method=linear_probe"],
           ["method=wise_ft", "method.inner=lora", "+method.inner_options.sides=[text]"]]


def trained_tensors(parts) -> dict:
    return {n: p.detach().float().cpu().clone() for n, p in parts.task.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("overrides", METHODS, ids=lambda o: o[0].split("=")[1])
def test_one_bf16_step_per_method(overrides, make_cfg, tiny_clip_dir):
    from domainclip.pipeline.objectives import adapt
    from domainclip.pipeline.run import adaptation, setup

    cfg = make_cfg("recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}", *overrides, *GPU)
    parts = setup(cfg)
    before = trained_tensors(parts)
    adapt(adaptation(parts))
    after = trained_tensors(parts)
    if overrides[0] != "method=linear_probe":  # a closed-form fit, not a gradient step
        assert before and any(not torch.equal(before[n], after[n]) for n in before)  # the step changed weights
    assert all(torch.isfinite(t).all() for t in after.values())
    batch = next(iter(parts.dm.val_dataloader()))
    with torch.no_grad():
        logits = parts.task.logits({k: v.to(parts.task.device) if torch.is_tensor(v) else v for k, v in batch.items()})
    assert torch.isfinite(logits).all()


def test_inference_passes_run_on_the_gpu_and_match_the_cpu(make_cfg, tiny_clip_dir):
    """The feature cache and the evaluation's predictions run on the accelerator
    (``core.devices``), give the CPU's figures, and leave the model where it was."""
    from domainclip.core.devices import compute_device
    from domainclip.data import ImageDataset
    from domainclip.data.features import compute_features
    from domainclip.pipeline.run import setup
    from domainclip.pipeline.run_data import predictions
    from domainclip.transforms.pipeline import DomainOptions

    cfg = make_cfg("recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                   *[o for o in GPU if o != "data.cache_features=false"])
    parts = setup(cfg)  # builds the feature cache on the GPU
    device = compute_device(cfg.trainer.accelerator)
    assert device.type == "cuda"
    card, records = parts.data.card, parts.data.splits["val"]
    images = ImageDataset(records, card.reader.name, card.reader.options, DomainOptions.from_dict(card.transforms),
                          parts.task.tower.preprocess, len(card.classes), False, [0] * len(records))
    on_gpu = compute_features(parts.task.tower, images, batch_size=8, device=device)
    on_cpu = compute_features(parts.task.tower, images, batch_size=8)
    torch.testing.assert_close(on_gpu.features, on_cpu.features, atol=1e-4, rtol=1e-4)
    assert on_gpu.features.device.type == "cpu" and next(parts.task.parameters()).device.type == "cpu"
    gpu_logits = predictions(parts.task, parts.dm, parts.data, ["val"], device=device)["val"].logits
    cpu_logits = predictions(parts.task, parts.dm, parts.data, ["val"])["val"].logits
    torch.testing.assert_close(gpu_logits, cpu_logits, atol=1e-3, rtol=1e-3)
    assert next(parts.task.parameters()).device.type == "cpu"


def test_fsdp_wraps_blocks_and_trains(make_cfg, tiny_clip_dir):
    from torch.distributed.fsdp import FullyShardedDataParallel

    from domainclip.pipeline.objectives import Adaptation, adapt
    from domainclip.pipeline.run import build_trainer, setup

    cfg = make_cfg("recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}", "method=full",
                   "trainer=fsdp", *GPU)
    parts = setup(cfg)
    trainers = []

    def make_trainer():
        trainers.append(build_trainer(cfg, parts.run_dir))
        return trainers[-1]

    adapt(Adaptation(parts.task, parts.dm, make_trainer))
    units = [m for m in trainers[0].strategy.model.modules() if isinstance(m, FullyShardedDataParallel)]
    assert len(units) > 2  # the root plus one unit per transformer block
    assert trainers[0].global_step == 2


def _nccl_worker(rank: int, init_file: str, out_dir: str):
    import torch.distributed as dist
    from test_distributed import CASES, WORLD, B, loss_and_grads, make_data

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    img, txt, labels = (t.cuda() for t in make_data())
    part = slice(rank * B, (rank + 1) * B)
    results = {}
    for name, local in CASES:
        loss, gi, gt = loss_and_grads(name, img[part], txt[part], labels[part], local)
        results[f"{name}/{local}"] = {"loss": loss.cpu(), "gi": gi.cpu(), "gt": gt.cpu()}
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_losses_all_gather_over_nccl(tmp_path):
    import torch.multiprocessing as mp
    from test_distributed import CASES, WORLD, B, loss_and_grads, make_data

    mp.spawn(_nccl_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    img, txt, labels = make_data()
    for name, local in CASES:
        loss, gi, gt = loss_and_grads(name, img, txt, labels, local_loss=False)
        per_rank = [r[f"{name}/{local}"] for r in ranks]
        assert abs(float(sum(r["loss"] for r in per_rank) / WORLD - loss)) < 1e-6
        for rank, r in enumerate(per_rank):
            part = slice(rank * B, (rank + 1) * B)
            torch.testing.assert_close(r["gi"] / WORLD, gi[part], atol=1e-6, rtol=0)
            torch.testing.assert_close(r["gt"] / WORLD, gt[part], atol=1e-6, rtol=0)
