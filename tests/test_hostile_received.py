"""Received bundles and configs, second round (issue 37): nothing in a bundle makes peft import a
module, no importable file is accepted, a reproduce.yaml or capsule config names no code, no
limit (pixel cap, rank, regex) comes from the bundle, every number the loader uses is checked,
and inputs to the Predictor are validated."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from test_hostile_bundles import TINY, copy, edit_metadata, lora_bundle  # noqa: F401 - fixtures

import domainclip
from domainclip.core.errors import BundleError, ConfigError, InputError, ReadError
from domainclip.export.bundle import write_sums


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ----- code from a bundle -----------------------------------------------------------------------
def plant_megatron(folder: Path, marker: Path) -> None:
    """A package ``megatron.x`` whose import writes ``marker``: what peft imports when an adapter
    config sets ``megatron_config`` and ``megatron_core``."""
    package = folder / "megatron"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "x.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")


def test_adapter_config_cannot_make_peft_import_a_module(copy, tmp_path, monkeypatch, tiny_clip_dir):  # noqa: F811
    marker, work = tmp_path / "PWNED", tmp_path / "work"
    plant_megatron(work, marker)
    monkeypatch.chdir(work)  # the working directory holds the module, as when a user works inside the bundle
    monkeypatch.syspath_prepend(str(work))
    path_before = list(sys.path)

    def attack(cfg):
        cfg.update(megatron_config={"tensor_model_parallel_size": 1}, megatron_core="megatron.x")

    edit_json(copy / "adapter_config.json", attack)
    write_sums(copy)
    with pytest.raises(BundleError, match=r"adapter_config.json: 'megatron_co.*Re-export the bundle"):
        domainclip.load_bundle(copy)
    assert not marker.exists() and "megatron" not in sys.modules and sys.path == path_before
    # the attack is real: peft, handed the same file, imports the module
    from peft import PeftModel
    from transformers import CLIPModel

    with pytest.raises(Exception):  # noqa: B017 - whatever fails after the import, the import happened
        PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_clip_dir), copy)
    assert marker.exists()


@pytest.mark.parametrize("name", ["megatron.py", "megatron/__init__.py", "site.pth", "x.cpython-311.so",
                                  "__pycache__/a.txt", "lib.zip"])
def test_importable_files_in_a_bundle_are_refused_unopened(copy, name):  # noqa: F811
    (copy / name).parent.mkdir(parents=True, exist_ok=True)
    (copy / name).write_text("import os\n")
    write_sums(copy)
    with pytest.raises(BundleError, match=rf"refusing (importable|pickle-capable) file\(s\) \['{name}'\]"):
        domainclip.load_bundle(copy)


@pytest.mark.parametrize("key, value", [
    ("target_modules", "(a+)+$"),  # catastrophic backtracking on every module name
    ("target_modules", ["q_proj"]),
    ("layers_pattern", "layers"),
    ("modules_to_save", ["text_projection"]),
    ("use_dora", True),
    ("not_a_lora_key", 1),
    ("peft_type", "IA3"),
])
def test_adapter_config_other_than_what_the_method_writes_is_refused(copy, key, value):  # noqa: F811
    edit_json(copy / "adapter_config.json", lambda cfg: cfg.update({key: value}))
    write_sums(copy)
    with pytest.raises(BundleError, match=rf"adapter_config.json: (key )?'{key}'"):
        domainclip.load_bundle(copy)


def bounded_load(bundle: Path, headroom: int = 1 << 30) -> subprocess.CompletedProcess:
    """``load_bundle`` in a fresh interpreter capped (``resource.setrlimit``) at what its imports use
    plus ``headroom``."""
    code = textwrap.dedent(f"""
        import resource, domainclip, torch, peft, transformers
        from domainclip.export.loader import load_bundle
        vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize'))
        resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom}, resource.RLIM_INFINITY))
        try:
            load_bundle({str(bundle)!r})
            print("LOADED")
        except domainclip.core.errors.BundleError as exc:
            print("REFUSED", exc)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ})


def test_huge_lora_rank_is_refused_before_allocating(copy):  # noqa: F811
    rank = 20_000_000
    edit_json(copy / "adapter_config.json", lambda cfg: cfg.update(r=rank))
    edit_json(copy / "adapted_model.json", lambda spec: spec["method"].update(r=rank))
    edit_metadata(copy, lambda meta: meta["method"]["config"].update(r=rank))  # also rewrites SHA256SUMS
    proc = bounded_load(copy)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, proc.stderr[-2000:]
    assert f"LoRA rank r={rank} is outside 1..32" in proc.stdout


def test_lora_tensors_of_another_rank_are_refused_from_the_header(copy):  # noqa: F811
    tensors = load_file(copy / "adapter_model.safetensors")
    name = next(k for k in tensors if "lora_A" in k)
    tensors[name] = torch.zeros(3, tensors[name].shape[1])
    save_file(tensors, copy / "adapter_model.safetensors")
    write_sums(copy)
    with pytest.raises(BundleError, match=rf"tensor '{name}' has shape \[3, 32\], not rank 8"):
        domainclip.load_bundle(copy)


def test_json_nesting_bomb_in_metadata_is_one_line(copy):  # noqa: F811
    text = (copy / "metadata.json").read_text()
    (copy / "metadata.json").write_text(text[:-1] + ', "bomb": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write_sums(copy)
    with pytest.raises(BundleError, match="metadata.json: JSON nested 100001 levels deep"):
        domainclip.load_bundle(copy)


# ----- numbers the loader uses ------------------------------------------------------------------
VALID_SETS = {"alpha": 0.1, "lac": {"threshold": 0.8, "scores": [0.1, 0.5, 0.8, 0.9]},
              "aps": {"threshold": 0.9, "scores": [0.2, 0.6, 0.9, 0.95]}}


def set_path(meta: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = meta
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


@pytest.mark.parametrize("dotted, value, match", [
    ("metrics.clinical.temperature", -1.0, "metrics.clinical.temperature=-1.0 must be a finite number > 0"),
    ("metrics.clinical.temperature", float("nan"), "metrics.clinical.temperature=nan"),
    ("conformal.lac.threshold", float("nan"), "conformal.lac.threshold"),
    ("conformal.aps.scores", [0.1, float("nan")], "conformal.aps.scores"),
    ("preprocessing.size", 0, "preprocessing.size"),
    ("preprocessing.size", 10**6, "preprocessing.size"),
    ("preprocessing.mean", [0.5, 0.5], "mean has 2 values and std 3"),
    ("preprocessing.std", [0.5, 0.0, 0.5], "preprocessing.std"),
    ("eval_settings.topk", 0, "eval_settings.topk"),
    ("eval_settings.bootstrap", 10**9, "eval_settings.bootstrap"),
])
def test_every_number_the_loader_uses_is_checked(copy, dotted, value, match):  # noqa: F811
    def corrupt(meta):
        meta["conformal"] = json.loads(json.dumps(VALID_SETS))
        set_path(meta, dotted, value)

    edit_metadata(copy, corrupt)
    with pytest.raises(BundleError, match=match) as err:
        domainclip.load_bundle(copy)
    assert "\n" not in str(err.value)


def test_look_alike_class_names_in_a_bundle_are_refused(copy):  # noqa: F811
    edit_metadata(copy, lambda m: m.update(classes=[m["classes"][0], m["classes"][0].upper() + "\u200b",
                                                    *m["classes"][2:]]))
    with pytest.raises(BundleError, match="differ only by case, spacing or invisible characters"):
        domainclip.load_bundle(copy)


def test_mean_for_another_channel_count_is_refused(copy):  # noqa: F811
    edit_metadata(copy, lambda m: m["preprocessing"].update(mean=[0.5] * 4, std=[0.5] * 4))
    with pytest.raises(BundleError, match="preprocessing.mean has 4 values for a tower with 3 input channels"):
        domainclip.load_bundle(copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_in_heads_are_refused(copy, value):  # noqa: F811
    heads = load_file(copy / "heads.safetensors")
    name = next(k for k in heads if "logit_scale" in k)
    heads[name] = torch.full_like(heads[name], value)
    save_file(heads, copy / "heads.safetensors", metadata={"format": "pt"})
    write_sums(copy)
    with pytest.raises(BundleError, match=rf"tensor '.*{name}' holds NaN or infinite values"):
        domainclip.load_bundle(copy)


def png_declaring(path: Path, width: int, height: int) -> None:
    """A few-byte PNG whose header declares ``width`` x ``height`` (its data is one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
                     + chunk(b"IEND", b""))


def test_a_bundle_cannot_lift_the_pixel_cap(copy, tmp_path):  # noqa: F811
    edit_metadata(copy, lambda m: m["preprocessing"]["reader_options"].update(max_pixels=None))
    predictor = domainclip.load_bundle(copy)
    assert "max_pixels" not in predictor.reader_options
    png_declaring(tmp_path / "bomb.png", 12000, 12000)  # 144 MP
    with pytest.raises(ReadError, match="144000000 values, over the limit of 64000000"):
        predictor.predict([tmp_path / "bomb.png"])


# ----- inputs to the Predictor ------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(lora_bundle):  # noqa: F811
    return domainclip.load_bundle(lora_bundle[1])


def test_fifo_given_to_predict_is_refused_not_waited_on(predictor, tmp_path):
    os.mkfifo(tmp_path / "stream.png")
    with pytest.raises(ReadError, match="FIFO"):
        predictor.predict([tmp_path / "stream.png"])
    with pytest.raises(ReadError, match="FIFO"):
        predictor.explain([tmp_path / "stream.png"])


@pytest.mark.parametrize("call", ["predict", "predict_sets", "explain", "embed_images", "raw_logits"])
def test_tensor_inputs_are_validated(predictor, call, monkeypatch):
    size, k = predictor.preprocess.size, len(predictor.classes)
    monkeypatch.setattr(predictor, "meta", {**predictor.meta, "conformal": VALID_SETS})
    fn = getattr(predictor, call)
    good = torch.zeros(2, 3, size, size)
    nan = good.clone()
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="1 NaN or infinite value"):
        fn(nan)
    with pytest.raises(InputError, match=rf"shape \(2, 1, {size}, {size}\).*\(N, 3, {size}, {size}\)"):
        fn(good[:, :1])
    with pytest.raises(InputError, match="shape"):
        fn(good[0])
    out = fn(good)
    assert len(out) == 2
    if call in ("predict", "explain"):  # (C, H, W) arrays are read as such: checked the same way
        with pytest.raises(InputError, match=r"input array of shape \(3, 8, 8\)"):
            fn([nan[1, :, :8, :8].numpy()])
    if call == "raw_logits":
        return
    empty = fn([])
    assert len(empty) == 0 and len(fn(good[:0])) == 0
    if call in ("predict", "explain"):
        assert empty.shape[1] == k


def test_a_bundle_given_as_dot_loads(lora_bundle, monkeypatch):  # noqa: F811
    monkeypatch.chdir(lora_bundle[1])
    assert domainclip.load_bundle(".").classes == domainclip.load_bundle(lora_bundle[1]).classes


# ----- received configs ---------------------------------------------------------------------------
def reproduce(bundle: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domainclip", "--config-dir", str(bundle), "--config-name",
                           "reproduce", *extra], capture_output=True, text=True, timeout=600, cwd=cwd)


def one_line(proc, *needles) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines
    return lines[0]


def edit_reproduce(bundle: Path, change) -> None:
    cfg = yaml.safe_load((bundle / "reproduce.yaml").read_text())
    change(cfg)
    (bundle / "reproduce.yaml").write_text(yaml.safe_dump(cfg))
    write_sums(bundle)


def test_reproduce_yaml_naming_code_is_refused_before_hydra(copy, tmp_path):  # noqa: F811
    hook = Path(sys.prefix) / "lib" / "domainclip_pwned.pth"
    evil = {"_target_": "pathlib.Path.write_text", "self": str(hook), "data": "import os\n"}
    edit_reproduce(copy, lambda cfg: cfg["trainer"]["callbacks"].update(evil=evil))
    one_line(reproduce(copy, tmp_path), "trainer.callbacks.evil._target_='pathlib.Path.write_text'")
    edit_reproduce(copy, lambda cfg: (cfg["trainer"]["callbacks"].pop("evil"),
                                      cfg.update(hydra={"callbacks": {"x": evil}})))
    one_line(reproduce(copy, tmp_path), "may not carry a 'hydra' section")
    assert not hook.exists() and not (tmp_path / "outputs").exists()


def test_reproduce_from_inside_the_bundle_is_refused_before_writing(copy, tmp_path):  # noqa: F811
    before = sorted(p.name for p in copy.rglob("*"))
    one_line(reproduce(copy, copy), "inside", "run it from a directory outside the bundle")
    one_line(reproduce(copy, tmp_path, f"hydra.run.dir={copy / 'rerun'}"), "inside")
    assert sorted(p.name for p in copy.rglob("*")) == before
    domainclip.load_bundle(copy)  # still whole


def test_tampered_reproduce_yaml_fails_its_checksum(copy, tmp_path):  # noqa: F811
    with open(copy / "reproduce.yaml", "a") as fh:
        fh.write("seed: 7\n")
    one_line(reproduce(copy, tmp_path), "reproduce.yaml does not match its SHA-256")


def test_reproduce_yaml_names_the_base_portably(copy, tiny_clip_dir):  # noqa: F811
    text = (copy / "reproduce.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert str(tiny_clip_dir) not in text and cfg["tower"]["path"] == tiny_clip_dir.name
    assert cfg["base_weights_digest"] == json.loads((copy / "metadata.json").read_text())["tower"]["weights_digest"]


def test_capsule_config_naming_code_is_refused_by_replay(tmp_path, capsys):
    from domainclip.replay import main

    capsule = tmp_path / "run" / "capsule"
    capsule.mkdir(parents=True)
    card = tmp_path / "card.yaml"
    card.write_text("name: x\n")
    from domainclip.core.fileio import sha256_file

    (capsule / "data.json").write_text(json.dumps({"root": str(tmp_path), "card": {"path": str(card),
                                                   "sha256": sha256_file(card)}, "files": {}}))
    (capsule / "config.yaml").write_text(yaml.safe_dump({"trainer": {"logger": {"_target_": "os.system",
                                                                                "command": "touch PWNED"}}}))
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer.logger._target_='os.system' is not one of" in err[0]
    assert not (tmp_path / "again").exists()


def test_shipped_targets_pass_and_a_users_own_config_dir_is_free(tmp_path):
    from domainclip.pipeline.received import check_received_config, check_received_dir, shipped_targets

    assert "pytorch_lightning.Trainer" in shipped_targets() and "pathlib.Path.write_text" not in shipped_targets()
    own = tmp_path / "mine"
    own.mkdir()
    (own / "exp.yaml").write_text(yaml.safe_dump({"cb": {"_target_": "my_lab.Callback"}}))
    check_received_dir(own, "exp")  # not a bundle or capsule: the user's own
    (own / "SHA256SUMS").write_text("")
    with pytest.raises(BundleError):
        check_received_dir(own, "exp")  # a folder that claims to be a bundle is checked as one
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({"trainer": {"_target_": "pytorch_lightning.Trainer"}}))
    check_received_config(tmp_path / "ok.yaml")
    (tmp_path / "defaults.yaml").write_text(yaml.safe_dump({"defaults": ["evil"]}))
    with pytest.raises(ConfigError, match="'defaults' section"):
        check_received_config(tmp_path / "defaults.yaml")
    shutil.rmtree(own)
