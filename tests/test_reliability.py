"""Reliability guarantees: exact resume after SIGTERM, atomic checkpoints, seeded determinism,
the run capsule and replay, hostile checkpoints and remote code."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from domainclip.core.errors import ConfigError
from domainclip.demo import demo_root
from domainclip.training.reliability.checkpoint_io import AtomicCheckpointIO, UnsafeCheckpointError, atomic_torch_save
from domainclip.training.sample_log import read_sample_log

# LoRA dropout makes the weights depend on the RNG stream, so a resume that restored the wrong
# RNG state (or skipped the wrong batches) cannot end with the same weights.
TRAIN = ["recipe=pathology", "trainer.max_epochs=2", "data.batch_size=8", "method.dropout=0.2",
         "eval.bootstrap=0", "eval.external_cards=[]", "export.enabled=false", "trainer.enable_progress_bar=false"]


def domainclip(run_dir: Path, cache: Path, *extra: str) -> subprocess.Popen:
    """``python -m domainclip`` on the pathology demo (with the tiny tower the test passes in)."""
    cmd = [sys.executable, "-m", "domainclip", *TRAIN, f"run_dir={run_dir}", f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "DOMAINCLIP_CACHE": str(cache)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trained(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def consumed(run_dir: Path) -> list[tuple]:
    return [(s["epoch"], s["step"], tuple(s["ids"])) for s in read_sample_log(run_dir / "samples")[0]]


@pytest.mark.timeout(900)
def test_sigterm_mid_epoch_then_resume_is_bitwise_identical(tmp_path, _cache, tiny_tower):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = domainclip(full_dir, _cache, *tiny_tower)
    assert full.wait(timeout=600) == 0, full.stderr.read()[-3000:]
    steps = len(consumed(full_dir))  # 2 epochs x 20 batches
    stop_after = random.Random().randint(3, steps // 2 - 3)  # a random step inside the first epoch

    cut = domainclip(cut_dir, _cache, *tiny_tower)
    log = cut_dir / "samples" / "rank0.jsonl"
    while cut.poll() is None and (not log.is_file() or len(log.read_text().splitlines()) < stop_after):
        time.sleep(0.02)  # no wall-clock deadline: a loaded machine only makes this slower
    assert cut.poll() is None, "the run ended before the step chosen for the signal"
    cut.send_signal(signal.SIGTERM)
    assert cut.wait(timeout=300) == 143, cut.stderr.read()[-3000:]
    stopped = len(consumed(cut_dir))
    assert stopped < steps, "the signal must arrive before training ends"
    assert trained(cut_dir)["global_step"] == stopped  # the checkpoint is the last finished step

    resumed = domainclip(cut_dir, _cache, *tiny_tower, "trainer.resume=auto")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert consumed(cut_dir) == consumed(full_dir)  # same sample ids, in the same order, at the same steps
    a, b = trained(full_dir), trained(cut_dir)
    assert a["global_step"] == b["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"]["zero_shot_after"] for d in (full_dir, cut_dir)]
    assert metrics[0] == metrics[1]


WRITER = """
import sys, torch
from domainclip.training.reliability.checkpoint_io import atomic_torch_save
atomic_torch_save({"step": 1, "w": torch.ones(3)}, sys.argv[1])
print("first", flush=True)
atomic_torch_save({"step": 2, "w": torch.zeros(150_000_000, dtype=torch.uint8)}, sys.argv[1])
"""


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_signal_between_our_check_and_lightnings_still_checkpoints_and_exits_143(tmp_path):
    """A SIGTERM landing after the preemption callback's check but before Lightning's own check at
    the end of the same step makes Lightning raise SIGTERMException (a plain SystemExit, code 0,
    no checkpoint); the callback must still checkpoint and exit 143."""
    import pytorch_lightning as pl

    from domainclip.training.reliability.preemption import Preemption

    class Linear(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class LateSignal(pl.Callback):  # runs after Preemption in the same step, as a late signal would
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 2:
                trainer._signal_connector.received_sigterm = True

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Preemption(str(tmp_path)), LateSignal()])
    with pytest.raises(SystemExit) as exit_:
        trainer.fit(Linear(), data)
    assert exit_.value.code == 143
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3  # the step the signal landed in, complete


def test_sigterm_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "first"
    tmp = path.with_name(path.name + ".tmp")
    deadline = time.time() + 60
    while not tmp.exists() and time.time() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0, "killed while writing"
    state = AtomicCheckpointIO().load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def run_seeded(make_cfg, tiny_tower, run_dir_name: str, seed: int):
    from domainclip.pipeline.run import run

    cfg = make_cfg("recipe=pathology", *tiny_tower, "trainer.max_epochs=1", "method.dropout=0.2", "eval.bootstrap=0",
                   "export.enabled=false", "trainer.enable_progress_bar=false", "trainer.deterministic=true",
                   f"seed={seed}")
    cfg.run_dir = str(Path(cfg.run_dir).parent / run_dir_name)
    result = run(cfg)
    return trained(result.run_dir)["state_dict"], result


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_seeded_runs_are_bitwise_equal_and_seeds_differ(make_cfg, tiny_tower):
    a, ra = run_seeded(make_cfg, tiny_tower, "a", 0)
    b, rb = run_seeded(make_cfg, tiny_tower, "b", 0)
    c, _ = run_seeded(make_cfg, tiny_tower, "c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.metrics["zero_shot_after"] == rb.metrics["zero_shot_after"]
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_worker_seeding_differs_per_worker_and_repeats_across_reruns():
    import numpy as np

    from domainclip.data.datamodule import SplitDataModule

    class Noisy(torch.utils.data.Dataset):
        records = []

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"index": torch.tensor(i), "label": torch.tensor(0), "aug": torch.tensor([np.random.rand(), torch.rand(()).item()])}

    def draws():
        dm = SplitDataModule({"train": Noisy()}, batch_size=1, num_workers=2, seed=5)
        return {int(b["index"]): b["aug"][0].tolist() for b in dm.train_dataloader()}

    first, second = draws(), draws()
    assert first == second  # reruns repeat
    assert len({tuple(v) for v in first.values()}) == 8  # no two samples (or workers) share a draw


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_capsule_and_replay_name_a_changed_data_file(make_cfg, tmp_path, tiny_tower):
    from domainclip.pipeline.run import run
    from domainclip.replay import check_data, main, replay

    for name in ("pathology", "pathology_site_b"):  # a private copy of the demos, to damage one file of
        shutil.copytree(demo_root(name), tmp_path / "demo" / f"{name}-seed0")
    cfg = make_cfg("recipe=pathology", *tiny_tower, f"data.demo_dir={tmp_path / 'demo'}", "trainer.max_epochs=1",
                   "eval.bootstrap=0", "export.enabled=false", "trainer.enable_progress_bar=false")
    result = run(cfg)
    capsule = result.run_dir / "capsule"
    env = json.loads((capsule / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0 and "dirty" in env["git"]
    assert "torch==" in (capsule / "pip_freeze.txt").read_text()
    data = json.loads((capsule / "data.json").read_text())
    assert len(data["files"]) == 320 and len(data["split_hash"]) == 64
    assert check_data(result.run_dir) == []

    again = replay(result.run_dir)  # unchanged data: reruns to the same metrics
    assert again.metrics["zero_shot_after"] == result.metrics["zero_shot_after"]

    victim = Path(data["root"]) / sorted(data["files"])[7]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert check_data(result.run_dir) == [str(victim)]
    assert main([str(result.run_dir), "--check-only"]) == 2


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_checkpoint_is_refused_on_every_load_path(make_cfg, tmp_path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "evil": Payload(marker)}, ckpt)

    with pytest.raises(UnsafeCheckpointError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(ckpt)  # the trainer's resume path
    from omegaconf import OmegaConf

    from domainclip.export.__main__ import reexport

    cfg = make_cfg("recipe=pathology", "trainer.resume=auto")
    (tmp_path / "run" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    with pytest.raises(UnsafeCheckpointError):
        reexport(tmp_path / "run", None)  # python -m domainclip.export run_dir=...
    from domainclip.training.reliability.resume import find_checkpoint

    with pytest.raises(UnsafeCheckpointError):  # resume=auto inspects the checkpoint before training
        find_checkpoint(cfg.trainer.resume, tmp_path / "run")
    assert not marker.exists()


def test_pickle_payload_adapter_bin_is_refused(tmp_path):
    from peft.utils import load_peft_weights

    from domainclip.core.errors import BundleError
    from domainclip.export.loader import load_bundle

    marker = tmp_path / "PWNED"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    torch.save({"w": Payload(marker)}, bundle / "adapter_model.bin")
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(bundle)
    with pytest.raises(Exception):
        load_peft_weights(str(bundle), device="cpu")  # peft's own loader: weights_only
    assert not marker.exists()


def test_remote_code_needs_a_pinned_commit(tiny_clip_dir):
    from domainclip.towers import build_tower

    with pytest.raises(ConfigError, match="40-hex commit"):
        build_tower({"name": "hf_clip", "path": str(tiny_clip_dir), "trust_remote_code": True, "revision": "main"})
    tower = build_tower({"name": "hf_clip", "path": str(tiny_clip_dir)})
    assert tower.model.config.name_or_path  # the default path loads without remote code


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_capsule_pip_freeze_equals_importlib_metadatas_own_parse():
    """The capsule reads Name and Version off each METADATA head; importlib.metadata's full
    e-mail parse of every installed distribution is the oracle."""
    from importlib import metadata

    from domainclip.training.reliability.capsule import pip_freeze

    want = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    assert pip_freeze() == "\n".join(sorted(want, key=str.lower)) + "\n"
