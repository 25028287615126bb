"""Load and validate a data card: data only, paths confined to the card's root."""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from domainclip.cards.schema import DataCard
from domainclip.core.errors import CardError
from domainclip.core.fileio import sha256_file
from domainclip.core.paths import data_cards_dir
from domainclip.core.safe_yaml import load_yaml_file

FORBIDDEN_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def resolve_card_path(ref: str | Path) -> Path:
    """A shipped card name (``demo_pathology``) or a path to a YAML file."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if not path.suffix and "/" not in ref:
        path = data_cards_dir() / f"{ref}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in data_cards_dir().glob("*.yaml")))
        raise CardError(
            f"data card '{ref}' not found (looked for {path}). "
            f"Pass a path to a card YAML, or one of the shipped cards: {shipped}"
        )
    return path.resolve()


def _reject_code(node, where: str, file: Path) -> None:
    """Refuse instantiation keys and interpolations anywhere in the card."""
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key) in FORBIDDEN_KEYS:
                raise CardError(f"{file}: field '{where}{key}' is not allowed: a data card is data, not code")
            _reject_code(value, f"{where}{key}.", file)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_code(value, f"{where}{i}.", file)
    elif isinstance(node, str) and "${" in node:
        raise CardError(
            f"{file}: field '{where.rstrip('.')}' has an interpolation {node!r}; "
            "data cards take literal values only"
        )


def _format_validation(file: Path, err: ValidationError) -> str:
    lines = [f"{file}: invalid data card"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - field '{field}': {e['msg']}{got_s}")
    return "\n".join(lines)


def card_digest(path: Path) -> str:
    """SHA-256 of the card file's bytes."""
    return sha256_file(path)


def load_card(ref: str | Path) -> tuple[DataCard, Path]:
    """Load, security-check and validate a card; returns (card, card file path)."""
    path = resolve_card_path(ref)
    raw = load_yaml_file(path)
    if not isinstance(raw, dict):
        raise CardError(f"{path}: a data card must be a YAML mapping, got {type(raw).__name__}")
    _reject_code(raw, "", path)
    try:
        card = DataCard.model_validate(raw)
    except ValidationError as exc:
        raise CardError(_format_validation(path, exc)) from None
    for field in ("root", "manifest"):
        value = getattr(card, field)
        if value is not None:
            check_relative(value, f"{path}: field '{field}'")
    return card, path


def check_relative(value: str, where: str) -> None:
    """A card path must be relative and must not climb out with '..'."""
    p = Path(value)
    if p.is_absolute():
        raise CardError(f"{where}: absolute path {value!r} is not allowed; give a path relative to the card")
    if ".." in p.parts:
        raise CardError(f"{where}: path {value!r} escapes the card's root ('..' is not allowed)")


def confined(root: Path, relative: str, where: str) -> Path:
    """Resolve ``relative`` under ``root`` (symlinks followed) and refuse anything outside."""
    if "\x00" in relative:
        raise CardError(f"{where}: path {relative!r} contains a NUL byte; fix the manifest entry")
    check_relative(relative, where)
    root = root.resolve()
    try:
        full = (root / relative).resolve()
    except (OSError, ValueError) as exc:
        raise CardError(f"{where}: path {relative!r} cannot be resolved ({exc}); fix the manifest entry") from None
    if full != root and root not in full.parents:
        raise CardError(f"{where}: {relative!r} resolves to {full}, outside the card's root {root}")
    return full
