"""Non-finite guard under DDP: NaN injected on one rank of a 2-process gloo run. ``skip`` skips
that step on both ranks and finishes (no hang); ``halt`` stops both ranks with a non-zero exit."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_methods import CAPTIONS, CLASSES, POOLS, toy_batch

from domainclip.training.reliability.guard import NonFiniteGuard

POISONED_STEP, STEPS = 2, 5


class ToyData(torch.utils.data.Dataset):
    """Each rank's toy samples; rank 1's batch at POISONED_STEP has a NaN pixel."""

    def __init__(self, rank: int, size: int):
        self.batch = toy_batch(size, n=4 * STEPS, seed=rank)
        self.rank = rank

    def __len__(self):
        return 4 * STEPS

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.batch.items()}
        if self.rank == 1 and i // 4 == POISONED_STEP:
            item["pixels"] = item["pixels"].clone()
            item["pixels"][0, 0, 0] = float("nan")
        return item


def worker(rank: int, port: int, mode: str, tower_dir: str, out_dir: str) -> None:
    import pytorch_lightning as pl

    from domainclip.training.task import ContrastiveTask

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.manual_seed(0)
    task = ContrastiveTask(tower={"name": "hf_clip", "path": tower_dir}, method={"name": "lora", "sides": ["image", "text"]},
                           loss={"name": "clip"}, captions=CAPTIONS, pools=POOLS, class_prompts=POOLS, class_names=CLASSES,
                           guard=NonFiniteGuard(mode, max_consecutive=3, log_file=f"{out_dir}/nonfinite.jsonl"))
    loader = torch.utils.data.DataLoader(ToyData(rank, task.tower.preprocess.size), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False)
    try:
        trainer.fit(task, loader)
    except Exception as err:  # noqa: BLE001 - the halt case: report and exit non-zero
        with open(f"{out_dir}/error{rank}.txt", "w") as fh:
            fh.write(f"{type(err).__name__}: {err}")
        raise SystemExit(3)
    finite = all(bool(torch.isfinite(p).all()) for p in task.parameters())
    lora = {n: p.detach().clone() for n, p in task.named_parameters() if p.requires_grad}
    torch.save({"finite": finite, "lora": lora, "skipped": task.guard.skipped, "step": trainer.global_step},
               f"{out_dir}/rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(mode: str, tiny_clip_dir, out) -> list[int]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, mode, str(tiny_clip_dir), str(out))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)  # a hang fails here (>= 10x the test on a slow 2-core machine), not in CI's global timeout
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"{mode}: a rank hung"
    return [p.exitcode for p in procs]


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_skip_skips_the_step_on_both_ranks(tiny_clip_dir, tmp_path):
    assert launch("skip", tiny_clip_dir, tmp_path) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["finite"] for r in ranks)
    assert [[s["step"] for s in r["skipped"]] for r in ranks] == [[POISONED_STEP], [POISONED_STEP]]
    for name, value in ranks[0]["lora"].items():  # the ranks stayed in sync
        assert torch.equal(value, ranks[1]["lora"][name]), name
    logged = [json.loads(line) for line in (tmp_path / "nonfinite.jsonl").read_text().splitlines()]
    assert sorted(e["rank"] for e in logged) == [0, 1]
    assert any(e["ids"] == list(range(4 * POISONED_STEP, 4 * POISONED_STEP + 4)) for e in logged)


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_halt_stops_both_ranks(tiny_clip_dir, tmp_path):
    codes = launch("halt", tiny_clip_dir, tmp_path)
    assert all(c != 0 for c in codes), codes
    assert "TrainingHalted" in (tmp_path / "error0.txt").read_text()
    assert "TrainingHalted" in (tmp_path / "error1.txt").read_text()


def test_guard_single_process_counts_consecutive_skips():
    guard = NonFiniteGuard("skip", max_consecutive=2)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.tensor([1.0, float("inf")])
    assert guard.step_allowed(torch.tensor(1.0), [p], 0, [0]) is False
    assert guard.step_allowed(torch.tensor(float("nan")), [], 1, [1]) is False
    p.grad = torch.ones(2)
    assert guard.step_allowed(torch.tensor(1.0), [p], 2, [2]) is True  # resets the run of skips
    from domainclip.training.reliability.guard import TrainingHalted

    for step in range(3, 5):
        guard.step_allowed(torch.tensor(float("nan")), [], step, [step])
    with pytest.raises(TrainingHalted, match="consecutive"):
        guard.step_allowed(torch.tensor(float("nan")), [], 5, [5])
