"""Hostile cards and manifests: each case is refused with one line naming the file and field, fast,
before any work (issue 17, section 1 'YAML' and section 3)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from domainclip.core.errors import CardError
from domainclip.data import load_card_data

CLASSES = ["benign", "tumour"]


def tile_collection(root, n=12, name="tiles", extra_columns=None, rows=None):
    """n small PNG tiles, two classes, one patient per two tiles; returns the card path."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"t{i}.png")
        lines.append({"path": f"t{i}.png", "label": CLASSES[i % 2], "patient": f"P{i // 2}", **(extra_columns or {})})
    header = list(lines[0])
    text = ",".join(header) + "\n" + "".join(",".join(str(r[h]) for h in header) + "\n" for r in (rows or lines))
    (root / "manifest.csv").write_text(text)
    card = {"name": name, "modality": "pathology", "license": "test", "reader": {"name": "tiles"},
            "manifest": "manifest.csv", "columns": {"path": "path", "label": "label", "group": "patient"},
            "classes": [{"name": c} for c in CLASSES]}
    (root / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return root / "card.yaml"


def edit_card(path, **changes):
    card = yaml.safe_load(path.read_text())
    card.update(changes)
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def refused(card, match):
    with pytest.raises(CardError, match=match) as err:
        load_card_data(card)
    assert "\n" not in str(err.value)
    return str(err.value)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))


@pytest.mark.parametrize("text, match", [
    (ALIAS_BOMB, "alias"),
    ("name: " + "[" * 5000 + "]" * 5000 + "\n", "nesting"),
    ("name: a\nname: b\nmodality: x\n", "key 'name' appears twice"),
    ("classes:\n  - name: a\n    name: b\n", "key 'name' appears twice"),
])
def test_yaml_bombs_depth_and_duplicate_keys_are_refused(tmp_path, text, match):
    card = tmp_path / "card.yaml"
    card.write_text(text)
    msg = refused(card, match)
    assert str(card) in msg


def test_non_utf8_card_is_one_line_in_every_command(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_bytes("name: caf\xe9\nmodality: x\n".encode("latin-1"))
    refused(card, "not UTF-8")
    for module in (["domainclip.cards", "validate"], ["domainclip.doctor"]):
        proc = subprocess.run([sys.executable, "-m", *module, str(card)], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr + proc.stdout and "not UTF-8" in proc.stderr + proc.stdout


def test_alias_bomb_via_cli_is_refused_without_traceback(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(ALIAS_BOMB)
    proc = subprocess.run([sys.executable, "-m", "domainclip.cards", "validate", str(card)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "alias" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_clean_collection_loads(tmp_path):
    data = load_card_data(tile_collection(tmp_path))
    assert sum(len(r) for r in data.splits.values()) == 12


def test_csv_with_byte_order_mark_loads(tmp_path):
    card = tile_collection(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert sum(len(r) for r in load_card_data(card).splits.values()) == 12


def test_manifest_row_longer_than_header_is_refused(tmp_path):
    card = tile_collection(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("t3.png,tumour,P1", "t3.png,tumour,P1,extra"))
    refused(card, "line 5 has 4 values but the header names 3")


def test_same_file_twice_and_with_two_labels_is_refused(tmp_path):
    card = tile_collection(tmp_path)
    manifest = tmp_path / "manifest.csv"
    text = manifest.read_text()
    manifest.write_text(text + "t0.png,benign,P0\n")
    refused(card, "rows 1 and 13 list the same file t0.png")
    manifest.write_text(text + "t0.png,tumour,P0\n")
    refused(card, "different labels")


@pytest.mark.parametrize("value", ["NaN", "nan", "", "None", "null"])
def test_missing_group_ids_are_refused(tmp_path, value):
    card = tile_collection(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("t5.png,tumour,P2", f"t5.png,tumour,{value}"))
    refused(card, "group id column 'patient'")


def test_nul_byte_in_manifest_is_refused(tmp_path):
    card = tile_collection(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("t2.png", "t2\x00.png"))
    refused(card, "NUL byte")


def test_jsonl_line_that_is_not_an_object_is_refused(tmp_path):
    card = tile_collection(tmp_path)
    rows = [json.dumps({"path": f"t{i}.png", "label": CLASSES[i % 2], "patient": f"P{i}"}) for i in range(4)]
    (tmp_path / "manifest.jsonl").write_text("\n".join(rows + ['["t5.png", "benign"]']) + "\n")
    edit_card(card, manifest="manifest.jsonl")
    refused(card, "line 5 is a JSON list, not an object")


def test_unknown_transform_and_reader_option_keys_are_refused(tmp_path):
    card = tile_collection(tmp_path)
    edit_card(card, transforms={"scal": "fixed"})
    refused(card, r"field 'transforms': unknown key\(s\) \['scal'\]")
    edit_card(card, transforms={}, reader={"name": "tiles", "options": {"mppp": 0.5}})
    refused(card, r"unknown option\(s\) \['mppp'\] for reader 'tiles'")


def test_empty_band_list_is_one_error_not_one_per_file(tmp_path):
    card = tile_collection(tmp_path)
    edit_card(card, reader={"name": "raster", "options": {"bands": []}})
    refused(card, "reader.options.bands': give a non-empty list")
