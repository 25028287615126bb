"""File helpers shared by every layer: one SHA-256, one atomic write, one disk-full message."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from domainclip.core.errors import BundleError, DomainClipError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteError(DomainClipError):
    """A file could not be written (disk full, quota, read-only); nothing half-written was kept."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_write_failure(exc: BaseException) -> bool:
    """Disk full / quota / file too large, as an ``OSError`` or as torch's or safetensors' own
    wrapped error (``RuntimeError: [enforce fail ...] file write failed``, ``SafetensorError``)."""
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE
    cause = exc.__cause__ or exc.__context__  # torch.save: "unexpected pos" raised while handling EFBIG
    if cause is not None and cause is not exc and is_write_failure(cause):
        return True
    text = str(exc).lower()
    codes = tuple(f"os error {code}" for code in NO_SPACE)  # safetensors' Rust I/O errors
    return any(s in text for s in ("file write failed", "no space left", "disk quota", "file too large", *codes))


@contextmanager
def writing(target: Path, debris: tuple[Path, ...] = ()):
    """Turn a full disk while writing ``target`` into one ``WriteError`` line, removing ``debris``
    (temporary files or folders) first; other errors pass through unchanged."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - torch and safetensors wrap OS errors in their own types
        if not (is_write_failure(exc) or isinstance(exc, PermissionError)):
            raise
        for d in debris:
            shutil.rmtree(d, ignore_errors=True) if Path(d).is_dir() else Path(d).unlink(missing_ok=True)
        why = "permission denied" if isinstance(exc, PermissionError) else "the disk is full (or over quota)"
        raise WriteError(f"cannot write {target}: {why}; free space or choose another directory. "
                         "Nothing half-written was kept") from None


@contextmanager
def whole_file(path: Path):
    """Yield a temporary name beside ``path`` (same suffix, so writers that infer the format from it
    still do); once the block ends, it replaces ``path`` atomically. On any failure the temporary
    file is removed and ``path`` is left as it was; a full disk is one ``WriteError`` naming
    ``path``. Every file a run writes goes through this or :func:`atomic_write_text`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    with writing(path, (tmp,)):
        try:
            yield tmp
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and an atomic rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, (tmp,)):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


MAX_SAFETENSORS_HEADER = 16 << 20  # real headers are a few KB; a huge one is an attack or damage


def check_safetensors_header(path: Path) -> None:
    """Refuse a safetensors file whose header is oversized or runs past the end of the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror}); re-export it") from None
    if header > MAX_SAFETENSORS_HEADER or header + 8 > size:
        raise BundleError(f"{path}: safetensors header of {header} bytes is too large or past the end of the "
                          "file; the file is damaged. Re-export it")


def load_safetensors(path: Path) -> dict:
    """A safetensors file's tensors; a damaged file or an oversized header is a ``BundleError``
    naming the file (checked before safetensors allocates anything)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        check_safetensors_header(path)
        return load_file(str(path))
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
        raise BundleError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc}); "
                          "re-export it") from None
