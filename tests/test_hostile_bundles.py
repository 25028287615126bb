"""Hostile bundles: loading never runs code from a bundle, never follows a path out of (or into)
it, and turns every damaged file into a BundleError naming the file (issue 17, section 1)."""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

import domainclip
from domainclip.core.errors import BundleError
from domainclip.core.fileio import WriteError
from domainclip.export.__main__ import main as export_main
from domainclip.export.bundle import write_sums
from domainclip.pipeline.objectives import adapt
from domainclip.pipeline.run import adaptation, export_bundle, setup

TINY = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def lora_bundle(tmp_path_factory, tiny_clip_dir):
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir

    out = tmp_path_factory.mktemp("hostile-bundle")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["recipe=pathology", "tower=hf_clip", f"tower.path={tiny_clip_dir}",
                                           f"run_dir={out}", *TINY])
    parts = setup(cfg)
    adapt(adaptation(parts))
    return parts, export_bundle(parts, {"zero_shot_after": {}})


@pytest.fixture
def copy(lora_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(lora_bundle[1], dst)
    return dst


def edit_metadata(bundle, change):
    meta = json.loads((bundle / "metadata.json").read_text())
    change(meta)
    (bundle / "metadata.json").write_text(json.dumps(meta))
    write_sums(bundle)  # an attacker ships consistent checksums


EVIL_TOKENIZER = """
import pathlib
pathlib.Path({marker!r}).write_text("code from the bundle ran")
from transformers import BertTokenizer
class EvilTokenizer(BertTokenizer):
    pass
"""


def plant_remote_code(folder, marker, tiny_clip_dir):
    evil = folder / "evil"
    shutil.copytree(tiny_clip_dir, evil)
    (evil / "tokenization_evil.py").write_text(EVIL_TOKENIZER.format(marker=str(marker)))
    cfg = json.loads((evil / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (evil / "tokenizer_config.json").write_text(json.dumps(cfg))
    return evil


def test_bundle_cannot_turn_on_remote_code(copy, tmp_path, tiny_clip_dir):
    marker = tmp_path / "PWNED"
    evil = plant_remote_code(tmp_path, marker, tiny_clip_dir)  # outside: inside, the .py alone is refused

    def attack(meta):
        meta["tower"]["config"].update(path=str(evil), trust_remote_code=True, revision="a" * 40)

    edit_metadata(copy, attack)
    with pytest.raises(BundleError, match="may not turn on remote code"):
        domainclip.load_bundle(copy)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["inside", "relative", "elsewhere"])
def test_metadata_paths_are_never_followed(copy, tmp_path, tiny_clip_dir, where):
    marker = tmp_path / "PWNED"
    evil = plant_remote_code(tmp_path, marker, tiny_clip_dir)
    if where != "elsewhere":  # a copy of the evil tower inside the bundle is refused for its code alone
        shutil.copytree(evil, copy / "evil")
    target = {"inside": str(copy / "evil"), "relative": "evil", "elsewhere": str(evil)}[where]
    edit_metadata(copy, lambda meta: meta["tower"]["config"].update(path=target))
    if where != "elsewhere":
        with pytest.raises(BundleError, match=r"refusing importable file\(s\) \['evil/tokenization_evil.py'\]"):
            domainclip.load_bundle(copy)
    else:
        predictor = domainclip.load_bundle(copy)  # the base comes from this machine's registry, by digest
        assert tmp_path not in Path(predictor.tower.source).parents  # a registered tiny CLIP, never the evil copy
    assert not marker.exists()


def test_caller_base_inside_the_bundle_is_refused(copy, tiny_clip_dir):
    inside = copy / "base"
    shutil.copytree(tiny_clip_dir, inside)
    write_sums(copy)
    with pytest.raises(BundleError, match="inside the bundle"):
        domainclip.load_bundle(copy, base=inside)


def test_bundle_loads_on_another_machine_only_with_the_users_base(copy, tmp_path, tiny_clip_dir, monkeypatch):
    from peft import PeftModel
    from transformers import CLIPModel

    adapter = json.loads((copy / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == tiny_clip_dir.name  # no build-machine path
    assert str(tiny_clip_dir) not in (copy / "metadata.json").read_text()
    other = tmp_path / "models" / "my-clip"
    shutil.copytree(tiny_clip_dir, other)
    monkeypatch.setenv("DOMAINCLIP_CACHE", str(tmp_path / "fresh-cache"))  # another machine: empty registry
    with pytest.raises(BundleError, match="not on this machine.*base=DIR"):
        domainclip.load_bundle(copy)
    predictor = domainclip.load_bundle(copy, base=other)
    pixels = torch.randn(2, 3, 32, 32)
    expected = domainclip.load_bundle(copy, base=tiny_clip_dir).predict(pixels)
    torch.testing.assert_close(predictor.predict(pixels), expected)
    peft_model = PeftModel.from_pretrained(CLIPModel.from_pretrained(other), copy)
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())


def test_symlink_and_escaping_names_in_sums_are_refused(copy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the bundle")
    (copy / "link.txt").symlink_to(outside)
    write_sums(copy)
    with pytest.raises(BundleError, match="symbolic link"):
        domainclip.load_bundle(copy)
    (copy / "link.txt").unlink()
    write_sums(copy)
    sums = (copy / "SHA256SUMS").read_text()
    digest = sums.split()[0]
    for name in ("../secret.txt", str(outside), "a/../../secret.txt"):
        (copy / "SHA256SUMS").write_text(sums + f"{digest}  {name}\n")
        with pytest.raises(BundleError, match="only relative names inside the bundle"):
            domainclip.load_bundle(copy)


def test_blank_line_in_sums_names_the_file(copy):
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    (copy / "SHA256SUMS").write_text("\n".join([sums[0], "", *sums[1:]]) + "\n")
    with pytest.raises(BundleError, match=r"SHA256SUMS: line 2 is not"):
        domainclip.load_bundle(copy)


@pytest.mark.parametrize("content, match", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_malformed_metadata_is_a_bundle_error(copy, content, match):
    (copy / "metadata.json").write_text(content)
    write_sums(copy)
    with pytest.raises(BundleError, match=match) as err:
        domainclip.load_bundle(copy)
    assert "metadata.json" in str(err.value)


def test_huge_safetensors_header_is_a_bundle_error(copy):
    (copy / "heads.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    write_sums(copy)
    with pytest.raises(BundleError, match="heads.safetensors.*header"):
        domainclip.load_bundle(copy)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan")])
def test_non_positive_temperature_is_refused(copy, temperature):
    edit_metadata(copy, lambda meta: meta.update(temperature=temperature))
    with pytest.raises(BundleError, match="temperature"):
        domainclip.load_bundle(copy)


def test_kill_between_renames_keeps_a_complete_bundle(lora_bundle, monkeypatch):
    import domainclip.export.bundle as bundle_module

    parts, bundle = lora_bundle
    before = (bundle / "SHA256SUMS").read_text()
    real_rename, calls = os.rename, []

    def killed_at_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # old bundle moved aside, new one not yet in place
            raise KeyboardInterrupt("killed")
        real_rename(src, dst)

    monkeypatch.setattr(bundle_module.os, "rename", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(parts, {"zero_shot_after": {}})
    monkeypatch.setattr(bundle_module.os, "rename", real_rename)
    assert not bundle.exists()
    with pytest.raises(BundleError, match=r"no such bundle folder \(an interrupted export left it as .previous"):
        domainclip.load_bundle(bundle)  # a load is a read: it repairs nothing
    assert not bundle.exists() and bundle.with_name("bundle.previous").is_dir()
    assert export_main([f"repair={bundle}"]) == 0  # the repair happens when asked
    predictor = domainclip.load_bundle(bundle)  # the previous bundle is back and verifies
    assert (bundle / "SHA256SUMS").read_text() == before and predictor.classes


def test_full_disk_during_export_is_one_line_and_keeps_the_previous_bundle(lora_bundle, small_file_limit):
    parts, bundle = lora_bundle
    before = (bundle / "SHA256SUMS").read_text()
    parts.cfg.export.merge = True  # the merged model is far over the limit
    try:
        small_file_limit(64 << 10)
        with pytest.raises(WriteError, match="disk is full") as err:
            export_bundle(parts, {"zero_shot_after": {}})
    finally:
        parts.cfg.export.merge = False
    assert "\n" not in str(err.value)
    assert not bundle.with_name("bundle.partial").exists()
    assert (bundle / "SHA256SUMS").read_text() == before


def test_full_disk_during_checkpoint_is_one_line_without_debris(tmp_path, small_file_limit):
    from domainclip.training.reliability.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(10)}, tmp_path / "last.ckpt")
    small_file_limit(64 << 10)
    with pytest.raises(WriteError, match="last.ckpt"):
        io.save_checkpoint({"w": torch.zeros(100_000)}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert io.load_checkpoint(tmp_path / "last.ckpt")["w"].shape == (10,)
