"""An export bundle's files, checked before anything in them is used: plain files only (no
links), no pickle-capable or importable file, every file matching ``SHA256SUMS``, bounded and
schema-checked ``metadata.json``, and, once the model is built, finite weights and one mean and
std per input channel."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import torch

from domainclip.core.errors import BundleError
from domainclip.core.fileio import sha256_file
from domainclip.core.safe_json import loads_bounded
from domainclip.export.bundle import SUMS_FILE
from domainclip.export.schema import validate_metadata

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")
# files Python imports or runs (a module beside the working directory, a .pth site hook, an
# extension module, a zip on sys.path): a bundle is data and holds none of them
IMPORTABLE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyi", ".pyx", ".pth", ".so", ".pyd", ".dll", ".dylib",
                       ".egg", ".whl", ".zip")


def refuse_pickles(bundle: Path, files: set[str] | None = None) -> None:
    """A bundle holds safetensors and text only; any pickle-capable or importable file (Python
    source, bytecode, ``.pth`` hooks, extension modules, archives) is refused unopened."""
    files = bundle_files(bundle) if files is None else files
    found = sorted(name for name in files if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise BundleError(f"{bundle}: refusing pickle-capable file(s) {found}; bundles carry safetensors only. "
                          "Delete them (they were not opened) or re-export the bundle")
    code = sorted(name for name in files if PurePosixPath(name).suffix.lower() in IMPORTABLE_SUFFIXES
                  or "__pycache__" in PurePosixPath(name).parts)
    if code:
        raise BundleError(f"{bundle}: refusing importable file(s) {code}; a bundle is data and carries no code. "
                          "Delete them (nothing was imported) or re-export the bundle")


SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def bundle_files(bundle: Path) -> set[str]:
    """Every file under the bundle (relative names); a symbolic link anywhere is refused."""
    found = set()
    for p in bundle.rglob("*"):
        if p.is_symlink():
            raise BundleError(f"{bundle}: {p.relative_to(bundle).as_posix()} is a symbolic link; bundles hold "
                              "plain files only. Replace it with the file itself or re-export")
        if p.is_file():
            found.add(p.relative_to(bundle).as_posix())
    return found


def read_sums(bundle: Path) -> dict[str, str]:
    """``SHA256SUMS`` as name -> digest; every line must be ``<64 hex>  <relative name>``."""
    sums = bundle / SUMS_FILE
    if not sums.is_file():
        raise BundleError(f"{bundle}: {SUMS_FILE} is missing; re-export the bundle")
    text = sums.read_text(errors="replace")
    listed = {}
    for i, line in enumerate(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"), start=1):
        match = SUM_LINE.match(line)
        if not match:
            raise BundleError(f"{bundle}/{SUMS_FILE}: line {i} is not '<sha256>  <file>'; re-export the bundle")
        digest, name = match.groups()
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or not parts or name in listed:
            raise BundleError(f"{bundle}/{SUMS_FILE}: line {i} names {name!r}; only relative names inside "
                              "the bundle, each once, are allowed")
        listed[name] = digest
    return listed


def verify_sums(bundle: Path, files: set[str] | None = None) -> None:
    """Refuse a bundle whose files do not match SHA256SUMS (or that has unlisted files)."""
    present = (bundle_files(bundle) if files is None else files) - {SUMS_FILE}
    listed = read_sums(bundle)
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(f"{bundle}: files not listed in {SUMS_FILE}: {extra}; remove them or re-export")
    for name, digest in listed.items():
        path = bundle / name
        if name not in present:
            raise BundleError(f"{bundle}: {name} is listed in {SUMS_FILE} but missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle}: {name} does not match its SHA-256 in {SUMS_FILE}; the file was modified")


def read_metadata(bundle: Path) -> dict:
    """``metadata.json`` parsed and schema-checked; any damage is a ``BundleError`` naming it."""
    path = bundle / "metadata.json"
    try:
        meta = loads_bounded(path.read_text(encoding="utf-8"), str(path), BundleError)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text ({exc}); re-export the bundle") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: must hold a JSON object, got {type(meta).__name__}; re-export the bundle")
    validate_metadata(meta, str(path))
    return meta


def check_loaded(bundle: Path, meta: dict, model) -> None:
    """What the schema cannot see until the model exists: one preprocessing mean and std per
    input channel of the tower (or one for all), and finite values in every tensor the bundle
    supplied (heads, adapters, prompts: ``trainable_state``; a NaN there would make every
    probability NaN). The base weights are the user's own, checked by their digest."""
    channels = len(model.tower.preprocess.mean)
    given = len(meta["preprocessing"]["mean"])
    if model.input_adapter is None and given not in (1, channels):
        raise BundleError(f"{bundle}/metadata.json: preprocessing.mean has {given} values for a tower with {channels} "
                          "input channels; re-export the bundle")
    for name, tensor in model.trainable_state().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise BundleError(f"{bundle}: tensor '{name}' holds NaN or infinite values; re-export the bundle")
