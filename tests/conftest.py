"""Shared fixtures: offline env, one demo cache per session, config composition, tiny towers."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from domainclip.core.paths import config_dir  # noqa: E402


def pytest_configure(config):
    """Under pytest-xdist, one thread per worker (one worker per core), set in the controller
    before the workers start: every library in them (torch, numpy's BLAS) and every run or rank a
    test launches reads the same count."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"


# The test files that take longest, longest first (measured with --durations=0 on the 2-core dev
# machine). pytest-xdist hands whole files to the workers in collection order (addopts turn its
# reordering by test count off), so starting with these keeps one long file from running alone at
# the end while the other worker idles.
LONGEST_FIRST = ("test_run.py", "test_benchmarks.py", "test_slides.py", "test_reliability.py", "test_shards.py",
                 "test_hostile_runs.py", "test_methods.py", "test_ddp_run.py", "test_export.py", "test_guard.py",
                 "test_evaluation.py", "test_policy_and_cli.py")


def pytest_collection_modifyitems(items):
    """Collect the longest test files first (see ``LONGEST_FIRST``); the rest keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One domainclip cache (demos, features, file hashes) for the whole test run: under
    pytest-xdist the workers share it beside their own temporary folders, so each demo is
    generated once, by whichever worker needs it first (the caches lock as under DDP)."""
    cache = os.environ.get("DOMAINCLIP_TEST_CACHE")
    if not cache:
        base = tmp_path_factory.getbasetemp()
        cache = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "domainclip-cache")
    os.environ["DOMAINCLIP_CACHE"] = cache
    Path(cache).mkdir(parents=True, exist_ok=True)
    return Path(cache)


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real Hydra config with overrides, with ``run_dir`` under tmp_path."""

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=[f"run_dir={tmp_path / 'run'}", *overrides])

    return _make


def save_tiny_pair(out: Path, model_name: str, config_name: str, **extra) -> Path:
    """A 2-layer transformers image-text model built from a config and saved with the MiniLM
    (BERT) tokenizer, so it loads through the same code path as a real checkpoint."""
    import torch
    import transformers

    from domainclip.towers.two_tower import minilm_path

    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = getattr(transformers, config_name)(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=tok.sep_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        **extra,
    )
    torch.manual_seed(0)
    getattr(transformers, model_name)(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny CLIPModel saved to a temp dir."""
    return save_tiny_pair(tmp_path_factory.mktemp("tiny-clip"), "CLIPModel", "CLIPConfig", projection_dim=16)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A tiny SiglipModel saved to a temp dir."""
    return save_tiny_pair(tmp_path_factory.mktemp("tiny-siglip"), "SiglipModel", "SiglipConfig")


@pytest.fixture(scope="session")
def tiny_tower(tiny_clip_dir) -> list[str]:
    """Overrides that swap the embedded tower for the tiny CLIP: for end-to-end tests of the run's
    machinery (resume, replay, shards, ranks, loggers) that assert nothing about the demo targets."""
    return ["tower=hf_clip", f"tower.path={tiny_clip_dir}"]


@pytest.fixture(scope="session")
def open_clip_oracle():
    """open_clip and timm imported with the torchvision stand-in (see tests/openclip_oracle.py)."""
    import importlib.util

    import openclip_oracle

    if importlib.util.find_spec("open_clip") is None or importlib.util.find_spec("timm") is None:
        pytest.fail("open_clip and timm are the oracles of the open_clip tower tests; the README's test command "
                    "installs them (pip install --no-deps open_clip_torch timm ftfy wcwidth)")

    return openclip_oracle.install()[0]


@pytest.fixture(scope="session")
def open_clip_dirs(open_clip_oracle, tmp_path_factory) -> dict:
    """One tiny random checkpoint per open_clip family, saved in open_clip's format: ``clip``
    (OpenAI-style, QuickGELU, a logit bias, safetensors), ``timm_hf`` (timm ViT + BERT, pickled
    weights, tokenizer in the directory) and ``coca``."""
    import openclip_oracle

    root = tmp_path_factory.mktemp("open-clip")
    bert = openclip_oracle.save_tiny_bert(root / "bert")
    cfgs = openclip_oracle.family_configs(bert)
    return {"clip": openclip_oracle.save_family(open_clip_oracle, "clip", cfgs["clip"], root / "clip", safetensors=True,
                                                logit_bias=-2.0),
            "timm_hf": openclip_oracle.save_family(open_clip_oracle, "timm_hf", cfgs["timm_hf"], root / "timm_hf"),
            "coca": openclip_oracle.save_family(open_clip_oracle, "coca", cfgs["coca"], root / "coca")}


@pytest.fixture
def small_file_limit():
    """``small_file_limit(n)``: from then on, writes past n bytes fail with EFBIG, as on a full disk
    (SIGXFSZ ignored, so the error is raised); the limit is lifted after the test."""
    import resource
    import signal

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)
