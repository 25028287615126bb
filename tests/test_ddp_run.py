"""A 2-rank DDP run of the pathology recipe on CPU (gloo), launched the way users launch it:
``python -m domainclip ... trainer=ddp trainer.devices=2``; Lightning starts the second rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from domainclip.training.sample_log import read_sample_log


@pytest.mark.timeout(900)  # a hang guard: >= 10x the test's duration on a slow 2-core machine
def test_two_rank_ddp_run_sees_each_sample_once_per_epoch(tmp_path, _cache):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "domainclip", "recipe=pathology", "trainer=ddp", "trainer.accelerator=cpu",
           "trainer.devices=2", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "eval.bootstrap=20",
           "data.batch_size=24", "eval.external_cards=[]", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "DOMAINCLIP_CACHE": str(_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    n_train = sum(summary["counts"]["train"].values())
    log = read_sample_log(run_dir / "samples")
    assert sorted(log) == [0, 1], "both ranks trained"
    assert len(log[0]) == len(log[1])  # equal step counts: no rank waits on a collective forever
    for epoch in (0, 1):
        seen = Counter(i for rank in log.values() for step in rank if step["epoch"] == epoch for i in step["ids"])
        assert sorted(seen) == list(range(n_train)) and set(seen.values()) == {1}
    first = [step["ids"] for step in log[0] if step["epoch"] == 0]
    second = [step["ids"] for step in log[0] if step["epoch"] == 1]
    assert first != second  # reshuffled per epoch
    # rank 0 alone evaluated and exported; training improved on zero-shot
    assert (run_dir / "bundle" / "adapter_model.safetensors").is_file()
    after = summary["metrics"]["zero_shot_after"]["test"]["top1"]
    assert after > summary["metrics"]["zero_shot_before"]["test"]["top1"] + 0.2
