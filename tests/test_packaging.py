"""A non-editable install ships conf/, recipes/ and data_cards/ and composes from there."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "domainclip").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"


def test_installed_wheel_finds_configs_and_cards(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    code = (
        "from domainclip.core.paths import config_dir, data_cards_dir;"
        "from hydra import compose, initialize_config_dir;"
        "initialize_config_dir(config_dir=str(config_dir()), version_base='1.3').__enter__();"
        "cfg = compose('config', overrides=['recipe=satellite', 'run_dir=x']);"
        "print(config_dir(), data_cards_dir(), cfg.data.card)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    conf, cards, card = out.stdout.split()
    assert conf.startswith(str(target)) and cards.startswith(str(target)) and card == "demo_satellite"
    assert re.search(r"demo_pathology\.yaml", " ".join(os.listdir(cards)))
    vocab = target / "domainclip" / "towers" / "openclip" / "bpe_simple_vocab_16e6.txt.gz"
    assert vocab.is_file() and vocab.stat().st_size > 1_000_000  # the CLIP BPE vocabulary ships with the wheel
