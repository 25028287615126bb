"""Hostile runs: PHI never reaches disk, a SIGKILL loses at most an epoch, reproducing never writes
into the original run, one live run per directory, and what can be checked is checked before
training (issue 17, sections 1-3)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_hostile_cards import tile_collection

from domainclip.core.errors import BundleError, CardError, ConfigError
from domainclip.pipeline.run import run, setup
from domainclip.training.reliability.run_lock import hold_run_dir
from domainclip.training.sample_log import read_sample_log

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.bootstrap=0"]


def cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domainclip", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last


def test_phi_canary_refuses_the_run_before_anything_is_written(tmp_path, make_cfg):
    root = tmp_path / "data"
    root.mkdir()
    card = tile_collection(root, extra_columns={"patient_name": "ZEBULON CANARYSTRING"})
    spec = yaml.safe_load(card.read_text())
    spec["phi"] = {"columns": ["patient_name"]}
    spec["classes"][0]["description"] = "as seen in zebulon canarystring"
    card.write_text(yaml.safe_dump(spec))
    cfg = make_cfg("recipe=pathology", f"data.card={card}", "tower.image.size=32", *FAST)
    with pytest.raises(BundleError, match="nothing of the run was written") as err:
        run(cfg)
    assert "captions[" in str(err.value) and "manifest column 'patient_name'" in str(err.value)
    run_dir = Path(cfg.run_dir)
    written = [p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"] if run_dir.exists() else []
    assert written == []  # no hparams.yaml, no checkpoint, no log


def test_sigkill_loses_at_most_an_epoch_and_resume_says_where(tmp_path, _cache, tiny_tower):
    run_dir = tmp_path / "run"
    args = ["recipe=pathology", *tiny_tower, "trainer.max_epochs=2", "data.batch_size=8", "eval.bootstrap=0",
            "export.enabled=false", "trainer.enable_progress_bar=false", f"run_dir={run_dir}",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "DOMAINCLIP_CACHE": str(_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "domainclip", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log, periodic = run_dir / "samples" / "rank0.jsonl", run_dir / "checkpoints" / "periodic.ckpt"
    deadline = time.time() + 300  # a generous bound on waiting, not an assertion on speed
    while time.time() < deadline and proc.poll() is None:
        steps = len(log.read_text().splitlines()) if log.is_file() else 0
        if periodic.is_file() and steps >= 25:  # into the second epoch (20 steps per epoch)
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no handler can run: the OOM killer, a node failure
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = cli(*args, "trainer.resume=auto", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "epoch 0, step 20" in resumed.stderr
    steps = [s["step"] for s in read_sample_log(run_dir / "samples")[0]]
    assert steps == list(range(1, 41))  # every step once: the lost steps ran again, none twice in the log


def test_reproduce_from_a_copied_bundle_never_touches_the_original_run(tmp_path, make_cfg, tiny_tower):
    cfg = make_cfg("recipe=pathology", *tiny_tower, *FAST)
    result = run(cfg)
    copy = tmp_path / "copied-bundle"
    shutil.copytree(result.bundle_dir, copy)
    text = (copy / "reproduce.yaml").read_text()
    assert str(result.run_dir) not in text
    shutil.rmtree(result.run_dir)
    proc = subprocess.run([sys.executable, "-m", "domainclip", "--config-dir", str(copy), "--config-name",
                           "reproduce", "trainer.enable_progress_bar=false"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not result.run_dir.exists()  # nothing was written into the original run's directory
    new = [p.parent.parent for p in (tmp_path / "outputs").rglob("checkpoints/last.ckpt")]
    assert len(new) == 1 and (new[0] / "samples" / "rank0.jsonl").is_file() and (new[0] / "bundle").is_dir()


def test_a_run_directory_held_by_a_live_run_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    with hold_run_dir(run_dir):
        proc = cli("recipe=pathology", f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'h'}", *FAST)
    assert_one_line_error(proc, "in use by another live run")
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


def test_read_only_run_directory_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    run_dir = tmp_path / "ro"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    proc = cli("recipe=pathology", f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'h'}", *FAST)
    assert_one_line_error(proc, "not writable")


def test_occupied_run_directory_path_is_one_line(tmp_path):
    occupied = tmp_path / "file"
    occupied.write_text("a file where the run directory should be")
    proc = cli("recipe=pathology", f"run_dir={occupied}", f"hydra.run.dir={tmp_path / 'h'}", *FAST)
    assert_one_line_error(proc, "not writable")


def test_truncated_checkpoint_is_one_line(tmp_path, make_cfg):
    from domainclip.training.reliability.resume import find_checkpoint

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    import torch

    torch.save({"epoch": 0, "global_step": 3, "state_dict": {"w": torch.ones(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(ConfigError, match="damaged or truncated") as err:
        find_checkpoint(make_cfg("recipe=pathology", "trainer.resume=auto").trainer.resume, tmp_path / "run")
    assert "last.ckpt" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, needles", [
    ("eval.operating_point=foo", ("eval.operating_point='foo'", "youden or sensitivity")),
    ("trainer.max_epochs=abc", ("trainer.max_epochs='abc'", "integer")),
    ("data.batch_size=-1", ("data.batch_size=-1", ">= 1")),
    ("eval.splits=[val,tset]", ("eval.splits", "val")),
    ("eval.conformal_alpha=1.5", ("eval.conformal_alpha=1.5", "(0, 1)")),
    ("method.r=0", ("method.r=0", "lora", "integer >= 1")),
    ("method.lr=-1", ("method.lr=-1", "a number > 0")),
    ("eval.external_cards=demo_satellite", ("eval.external_cards='demo_satellite'", "a list of data card")),
    ("trainer.max_epoch=3", ("trainer.max_epoch: no such config key", "+trainer.max_epoch=")),
    ("+method.rr=4", ("method.rr: not a key of method 'lora'", "alpha, dropout")),
    ("+loss.temperature=2", ("loss.temperature: not a key of loss 'clip'", "local_loss")),
    ("method=lorax", ("method/lorax", "Available options in 'method': cocoop, coop")),
    ("data.card=???", ("data.card is not set", "recipe=pathology")),
    ("eval.group_label=majority", ("eval.group_label='majority'", "any:CLASS")),
])
def test_bad_config_values_fail_before_any_data_is_read(tmp_path, override, needles, monkeypatch, capsys):
    """The entry point's own ``main`` in this process (``python -m domainclip`` calls nothing else
    first); the next test runs one case in a fresh interpreter."""
    from domainclip.__main__ import main

    run_dir = tmp_path / "run"
    argv = ["recipe=pathology", override, f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'h'}",
            "data.demo_dir=" + str(tmp_path / "never-generated")]
    monkeypatch.setattr(sys, "argv", ["domainclip", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert_one_line_error(subprocess.CompletedProcess(argv, exit_.value.code, "", capsys.readouterr().err), *needles)
    assert not (tmp_path / "never-generated").exists() and not run_dir.exists()


def test_bad_config_value_is_one_line_from_a_fresh_interpreter(tmp_path):
    proc = cli("recipe=pathology", "data.batch_size=-1", f"run_dir={tmp_path / 'run'}",
               f"hydra.run.dir={tmp_path / 'h'}", "data.demo_dir=" + str(tmp_path / "never-generated"))
    assert_one_line_error(proc, "data.batch_size=-1", ">= 1")
    assert not (tmp_path / "never-generated").exists() and not (tmp_path / "run").exists()


def test_class_missing_from_test_is_refused_with_require_every_class(tmp_path, make_cfg):
    root = tmp_path / "data"
    root.mkdir()
    card = tile_collection(root)
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    split = lambda i: "train" if i < 4 else "val" if i < 8 else "test"  # noqa: E731 - two patients each
    manifest.write_text("\n".join([lines[0] + ",split"] + [  # the test patients' tumour tiles are dropped
        f"{line},{split(i)}" for i, line in enumerate(lines[1:]) if i < 8 or i % 2 == 0]) + "\n")
    spec = yaml.safe_load(card.read_text())
    spec["columns"]["split"] = "split"
    spec["split"] = {"require_every_class": True}  # the default trains and reports it not evaluated
    card.write_text(yaml.safe_dump(spec))
    cfg = make_cfg("recipe=pathology", f"data.card={card}", "tower.image.size=32", *FAST)
    with pytest.raises(CardError, match=r"test: \['tumour'\]"):
        run(cfg)
    assert not (Path(cfg.run_dir) / "checkpoints").exists()


def test_external_card_with_other_classes_is_refused_before_training(make_cfg):
    cfg = make_cfg("recipe=pathology", "eval.external_cards=[demo_satellite]", *FAST)
    with pytest.raises(CardError, match="demo_satellite.yaml: eval.external_cards needs the same task and classes"):
        run(cfg)
    assert not (Path(cfg.run_dir) / "checkpoints").exists()


def test_group_label_naming_no_class_of_the_card_is_refused_before_training(make_cfg):
    cfg = make_cfg("recipe=pathology", "eval.group_label=any:metastasis", *FAST)
    with pytest.raises(ConfigError, match="eval.group_label='any:metastasis'.*one of tumour, stroma, adipose, lymphocytes"):
        run(cfg)
    assert not (Path(cfg.run_dir) / "checkpoints").exists()


def test_more_shots_than_a_class_has_is_a_counted_warning(make_cfg, tiny_tower):
    parts = setup(make_cfg("recipe=pathology", *tiny_tower, "data.shots=1000", "method=zero_shot", *FAST))
    assert len(parts.warnings) == 4 and all("data.shots=1000" in w for w in parts.warnings)


def test_warnings_reach_metrics_json(make_cfg, tiny_tower):
    result = run(make_cfg("recipe=pathology", *tiny_tower, "data.shots=1000", "method=zero_shot", "export.enabled=false", *FAST))
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert len(summary["warnings"]) == 4


def test_default_run_directory_is_unique_per_launch():
    from omegaconf import OmegaConf

    from domainclip.core.paths import config_dir

    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"), resolve=False)
    pattern = raw["hydra"]["run"]["dir"]
    assert "%f" in pattern  # microseconds: two launches in the same second get two directories


def test_empty_split_is_refused_before_training(tmp_path, make_cfg):
    root = tmp_path / "data"
    root.mkdir()
    card = tile_collection(root)
    spec = yaml.safe_load(card.read_text())
    spec["split"] = {"level": "patient", "fractions": {"train": 0.7, "val": 0.3, "test": 0.0}}
    card.write_text(yaml.safe_dump(spec))
    with pytest.raises(CardError, match=r"split\(s\) \['test'\] are empty"):
        run(make_cfg("recipe=pathology", f"data.card={card}", "tower.image.size=32", *FAST))
