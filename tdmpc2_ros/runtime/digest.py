"""sha256 of files, read in 1 MB chunks (a model or checkpoint is never held whole just to hash it).
hashlib.file_digest would do, but it is Python 3.11+ and Humble runs 3.10. And the bytes a folder's
files hold (a bag, a model version)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_of(f) -> str:
    """sha256 of an open binary file, from its current position to its end."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_of(f)


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size of the files directly in `path` (a bag's or a model version's; not recursive)."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
