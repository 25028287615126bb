"""Hostile runs, second round (issue 37): file names are identifiers, every file a run writes is
whole or absent, a checkpoint of other settings is refused before resuming, the evaluator's
arguments are checked before work, and a small real collection with a class too rare for every
split trains and reports that class as not evaluated."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from domainclip.core.errors import CardError, ConfigError
from domainclip.core.fileio import WriteError
from domainclip.pipeline.run import run

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.bootstrap=0"]
CANARY, GROUP_CANARY = "QZFILECANARY", "QZGROUPCANARY"


def collection(root: Path, classes: dict[str, int], per_group: int = 2, names=None, extra=None,
               split_of=None, group_prefix: str = "") -> Path:
    """Tiles of ``classes`` (class -> number of patients, ``per_group`` tiles each), coloured by
    class so that a model can learn them; ``names`` maps a tile index to a file name, ``split_of``
    a patient id to its split (a split column)."""
    rng = np.random.default_rng(0)
    rows, i = [], 0
    for k, (name, groups) in enumerate(classes.items()):
        for g in range(groups):
            for _ in range(per_group):
                tile = np.clip(rng.normal(40 + 60 * k, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
                file = (names or {}).get(i, f"t{i:03d}.png")
                Image.fromarray(tile).save(root / file)
                rows.append({"path": file, "label": name, "patient": f"{group_prefix}{name}-{g}", **(extra or {}),
                             **({"split": split_of(f"{name}-{g}")} if split_of else {})})
                i += 1
    header = list(rows[0])
    (root / "manifest.csv").write_text(",".join(header) + "\n" + "".join(
        ",".join(str(r[h]) for h in header) + "\n" for r in rows))
    card = {"name": "real", "modality": "pathology", "license": "test", "reader": {"name": "tiles"},
            "manifest": "manifest.csv", "columns": {"path": "path", "label": "label", "group": "patient",
                                                    **({"split": "split"} if split_of else {})},
            "classes": [{"name": c} for c in classes]}
    (root / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return root / "card.yaml"


def edit(card: Path, change) -> Path:
    spec = yaml.safe_load(card.read_text())
    change(spec)
    card.write_text(yaml.safe_dump(spec, sort_keys=False))
    return card


# ----- PHI in file names --------------------------------------------------------------------------
def test_a_canary_in_file_names_reaches_no_cache_no_record_and_no_bundle(tmp_path, make_cfg, _cache, tiny_tower):
    root = tmp_path / "data"
    root.mkdir()
    names = {i: f"{CANARY}_{i}.png" for i in (0, 5, 9)}  # clinical exports name files by patient
    card = collection(root, {"benign": 6, "tumour": 6}, names=names, extra={"patient_name": CANARY},
                      group_prefix=GROUP_CANARY)  # group ids are identifiers too
    edit(card, lambda spec: spec.update(phi={"columns": ["patient_name"]}))
    cfg = make_cfg("recipe=pathology", f"data.card={card}", *tiny_tower, *FAST)
    result = run(cfg)
    leaks = [p for p in [*Path(cfg.run_dir).rglob("*"), _cache / "file_hashes.json"] if p.is_file()
             and any(c.lower().encode() in p.read_bytes().lower() for c in (CANARY, GROUP_CANARY))]
    assert leaks == []
    data = json.loads((Path(cfg.run_dir) / "capsule" / "data.json").read_text())
    assert sum(k.startswith("phi-") for k in data["files"]) == 3 and "t001.png" in data["files"]
    assert not any(Path(k).is_absolute() for k in data["files"])
    assert result.bundle_dir.is_dir()
    from domainclip.replay import check_data

    assert check_data(cfg.run_dir) == []  # replay still finds the pseudonymised files
    (root / names[5]).write_bytes(b"changed")
    assert len(check_data(cfg.run_dir)) == 1


def test_the_indexed_identifier_matcher_equals_scanning_every_value():
    from domainclip.data.identifiers import PHI_PATTERNS, IdentifierMatcher, identifier_pattern, norm

    values = ["ZEBULON^CANARY", "canary", "^lead", "x-ray 7", "P1-2", "Doe_John", "...", "abc.def", "1.2.840.99"]
    texts = ["scans/zebulon^canary_01.png", "canaryx.png", "a/^lead/b.dcm", "x-ray 7.tif", "p1-23.png", "p1-2.png",
             "DOE JOHN.dcm", "doe_johnny.dcm", "....png", "abc.def.png", "abc.defg", "t001.png", "2024-01-05.png"]

    def scan(text):  # every value, one by one, as the bundle audit does
        return (any(norm(v) and identifier_pattern(v).search(norm(text)) for v in values)
                or any(p.search(text) for p in PHI_PATTERNS.values()))

    matcher = IdentifierMatcher(values)
    assert [matcher(t) for t in texts] == [scan(t) for t in texts]
    assert sum(map(matcher, texts)) == 8 and not matcher("t001.png") and not matcher("canaryx.png")


# ----- files written whole ------------------------------------------------------------------------
def test_a_full_disk_during_the_report_leaves_no_truncated_file_and_names_it(tmp_path, small_file_limit):
    from domainclip.evaluation import figures

    rng = np.random.default_rng(0)
    curves = {"thresholds": list(np.linspace(0.01, 0.99, 99)),
              "classes": {f"class {k}": {"model": list(rng.normal(0, 0.1, 99)), "treat_all": list(rng.normal(0, 0.1, 99))}
                          for k in range(4)}}
    figures.decision_curves(tmp_path / "before.png", curves)
    assert (tmp_path / "before.png").stat().st_size > 20 << 10  # over the limit set below
    small_file_limit(20 << 10)
    with pytest.raises(WriteError, match=r"cannot write .*decision_curves.png: the disk is full") as err:
        figures.decision_curves(tmp_path / "decision_curves.png", curves)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.png"]  # nothing truncated, no debris


# ----- resume and the evaluator's arguments ---------------------------------------------------------
def test_resume_into_a_run_of_another_rank_is_one_line(tmp_path, make_cfg, tiny_tower):
    from domainclip.pipeline.objectives import adapt
    from domainclip.pipeline.run import adaptation, setup

    common = ["recipe=pathology", *tiny_tower, "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
              "export.enabled=false", "eval.bootstrap=0"]
    adapt(adaptation(setup(make_cfg(*common, "method.r=4"))))  # trains and checkpoints; no evaluation
    parts = setup(make_cfg(*common, "method.r=8", "trainer.resume=auto"))
    with pytest.raises(ConfigError, match=r"was written by a run with other settings: tensor '.*lora_A.*' is "
                                          r"\(4, 32\) there and \(8, 32\) here") as err:
        adapt(adaptation(parts))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args, needle", [
    (["BUNDLE", "card=x.yaml"], "arguments are key=value, got ['BUNDLE']"),
    (["bundle=b", "card=c", "split=validation"], "split=validation is not one of"),
    (["bundle=b", "card=c", "out=FILE"], "is an existing file; name a folder"),
    (["bundle=b"], "missing ['card']"),
])
def test_evaluator_arguments_are_checked_before_any_work(tmp_path, args, needle, capsys):
    from domainclip.evaluate import main

    (tmp_path / "FILE").write_text("keep me")
    assert main([a.replace("FILE", str(tmp_path / "FILE")) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert (tmp_path / "FILE").read_text() == "keep me"  # nothing evaluated, nothing written


def test_evaluator_help_and_a_loose_argument_from_a_fresh_interpreter(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "domainclip.evaluate", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    assert cli("--help").returncode == 0
    proc = cli("BUNDLE", "card=x.yaml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: arguments are key=value, got ['BUNDLE']; e.g. bundle=BUNDLE. usage: python -m domainclip.evaluate "
        "bundle=PATH card=PATH [split=test|val|train|all] [out=DIR] [base=DIR]"]


# ----- a class too rare for every split ---------------------------------------------------------------
def test_a_class_too_rare_for_every_split_trains_and_is_reported_not_evaluated(tmp_path, make_cfg, tiny_tower):
    root = tmp_path / "data"
    root.mkdir()
    card = collection(root, {"CT": 8, "MR": 8, "US": 8, "CR": 2})  # as in a real 28-file, four-modality export
    edit(card, lambda spec: spec.update(modality="radiology"))
    cfg = make_cfg("recipe=pathology", f"data.card={card}", *tiny_tower, *FAST)
    result = run(cfg)
    run_dir = Path(cfg.run_dir)
    counts = json.loads((run_dir / "metrics.json").read_text())["counts"]
    missing = [s for s in ("val", "test") if counts[s]["CR"] == 0]
    assert counts["train"]["CR"] > 0 and len(missing) == 1
    split = missing[0]
    metrics = result.metrics
    assert metrics["not_evaluated"] == {split: {"CR": f"not evaluated on {split} (2 groups)"}}
    text = (run_dir / "report" / "summary.md").read_text()
    assert f"class 'CR' not evaluated on {split} (2 groups)" in text
    card_text = (result.bundle_dir / "MODEL_CARD.md").read_text()
    assert f"Class `CR`: not evaluated on {split} (2 groups)" in card_text
    if split == "test":
        image = metrics["clinical"]["image_level"]
        assert np.isnan(image["per_class"]["CR"]["auroc"]) and image["per_class"]["CR"]["not_evaluated"]
        assert image["macro_over"] == [0, 1, 2] and np.isfinite(image["macro_auroc"])
        assert metrics["zero_shot_after"]["test"]["macro_over"] == ["CT", "MR", "US"]
    else:
        assert metrics["clinical"]["thresholds_not_fitted"] == {
            "CR": "no validation sample: the threshold is the 0.5 default"}
        assert "operating threshold not fitted on val" in text
    edit(card, lambda spec: spec["split"].update(require_every_class=True) if "split" in spec
         else spec.update(split={"require_every_class": True}))
    with pytest.raises(CardError, match=rf"no sample in a split the run needs \({split}: \['CR'\]\)"):
        run(make_cfg("recipe=pathology", f"data.card={card}", *tiny_tower, *FAST, f"run_dir={tmp_path / 'strict'}"))


def test_a_class_with_no_training_sample_is_still_refused(tmp_path, make_cfg, tiny_tower):
    root = tmp_path / "data"
    root.mkdir()
    card = collection(root, {"a": 6, "b": 6, "c": 1},
                      split_of=lambda p: "test" if p == "c-0" else ("train", "train", "train", "val", "test", "train")[
                          int(p[-1])])
    with pytest.raises(CardError, match=r"no sample in a split the run needs \(train: \['c'\]\)"):
        run(make_cfg("recipe=pathology", f"data.card={card}", *tiny_tower, *FAST))
