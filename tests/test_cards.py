"""Data cards: shipped cards validate; hostile or broken cards are refused with named fields."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from domainclip.cards import load_card
from domainclip.cards.manifest import read_records
from domainclip.cards.splits import assign_splits
from domainclip.core.errors import CardError
from domainclip.data import load_card_data

BASE = {
    "name": "t", "modality": "pathology", "reader": {"name": "image"}, "manifest": "m.csv",
    "columns": {"path": "path", "label": "label", "group": "patient"},
    "classes": [{"name": "a"}, {"name": "b"}],
}


def write_card(dir_: Path, **changes) -> Path:
    card = {**BASE, **changes}
    path = dir_ / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def write_manifest(dir_: Path, rows: list[tuple[str, str, str]]) -> None:
    (dir_ / "m.csv").write_text("path,label,patient\n" + "".join(f"{p},{lab},{g}\n" for p, lab, g in rows))
    for p, _, _ in rows:
        f = dir_ / p
        if not f.exists() and not p.startswith(("/", "..")):
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x")


@pytest.mark.parametrize("name", ["demo_pathology", "demo_radiology", "demo_satellite"])
def test_shipped_cards_validate(name):
    card, path = load_card(name)
    assert card.name == name and path.is_file()


@pytest.mark.parametrize("hostile", [
    {"reader": {"name": "image", "options": {"_target_": "os.system"}}},
    {"_target_": "os.system"},
    {"description": "${oc.env:HOME}"},
])
def test_code_in_a_card_is_refused(tmp_path, hostile):
    with pytest.raises(CardError, match="not allowed|interpolation"):
        load_card(write_card(tmp_path, **hostile))


@pytest.mark.parametrize("manifest", ["../../etc/passwd", "/etc/passwd"])
def test_manifest_path_escaping_root_is_refused(tmp_path, manifest):
    with pytest.raises(CardError, match="manifest"):
        load_card(write_card(tmp_path, manifest=manifest))


def test_row_path_escaping_root_names_the_row(tmp_path):
    card, _ = load_card(write_card(tmp_path))
    write_manifest(tmp_path, [("a.png", "a", "p1"), ("../../etc/passwd", "b", "p2")])
    with pytest.raises(CardError, match="row 2"):
        read_records(card, tmp_path)


def test_symlink_pointing_outside_is_refused(tmp_path):
    inside = tmp_path / "root"
    inside.mkdir()
    os.symlink("/etc/hostname", inside / "link.png")
    card, _ = load_card(write_card(inside))
    write_manifest(inside, [("link.png", "a", "p1")])
    with pytest.raises(CardError, match="outside the card's root"):
        read_records(card, inside)


def test_unknown_field_and_label_are_named(tmp_path):
    with pytest.raises(CardError, match="field 'colums'"):
        load_card(write_card(tmp_path, colums={}))
    card, _ = load_card(write_card(tmp_path))
    write_manifest(tmp_path, [("a.png", "zebra", "p1")])
    with pytest.raises(CardError, match=r"unknown label.*zebra.*\['a', 'b'\]"):
        read_records(card, tmp_path)


def test_missing_group_id_is_an_error(tmp_path):
    card, _ = load_card(write_card(tmp_path))
    write_manifest(tmp_path, [("a.png", "a", "")])
    with pytest.raises(CardError, match="group id"):
        read_records(card, tmp_path)


def test_patient_in_two_explicit_splits_is_refused(tmp_path):
    card, _ = load_card(write_card(tmp_path, columns={**BASE["columns"], "split": "split"}))
    (tmp_path / "m.csv").write_text("path,label,patient,split\na.png,a,p1,train\nb.png,b,p1,test\n")
    for f in ("a.png", "b.png"):
        (tmp_path / f).write_bytes(b"x")
    with pytest.raises(CardError, match="cross splits"):
        assign_splits(read_records(card, tmp_path), card.split)


def test_demo_splits_are_group_disjoint_and_deterministic():
    a = load_card_data("demo_radiology")
    b = load_card_data("demo_radiology")
    groups = {s: {r.group for r in recs} for s, recs in a.splits.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert all(groups.values())
    assert [r.path for r in a.splits["test"]] == [r.path for r in b.splits["test"]]


def test_missing_card_lists_shipped_cards():
    with pytest.raises(CardError, match="demo_pathology"):
        load_card("no_such_card")


def test_real_dataset_templates_are_valid_cards():
    from domainclip.core.paths import data_cards_dir

    templates = sorted((data_cards_dir() / "templates").glob("*.yaml"))
    assert len(templates) == 5
    for path in templates:
        card, _ = load_card(path)
        assert "TEMPLATE" in path.read_text().splitlines()[0]
        assert card.split.level in ("patient", "image", "spatial")


def test_multi_label_manifest_gives_multi_hot_targets(tmp_path):
    from domainclip.data import ImageDataset
    from domainclip.transforms.pipeline import DomainOptions, Preprocess

    path = write_card(tmp_path, task="multi_label", classes=[{"name": "a"}, {"name": "b"}, {"name": "c"}])
    card, _ = load_card(path)
    write_manifest(tmp_path, [("x.png", "a|c", "p1"), ("y.png", "b", "p2")])
    recs = read_records(card, tmp_path)
    assert [r.labels for r in recs] == [(0, 2), (1,)]
    ds = ImageDataset(recs, "image", {}, DomainOptions(), Preprocess(), 3, multi_label=True)
    assert ds.target(0).tolist() == [1.0, 0.0, 1.0]
