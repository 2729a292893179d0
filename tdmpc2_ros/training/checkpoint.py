"""Checkpoints: written atomically, verified on load, never half-applied.

A checkpoint is a one-line header (magic and the sha256 of the payload) followed by a torch pickle of
plain containers (tensors, numpy arrays, dicts). torch does not verify its own archive's checksums,
so the header is what catches flipped bytes inside tensor data. Loading a corrupt or truncated file
raises CheckpointError; the caller's current state is untouched because nothing is applied until the
whole file has been read and checked.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from tdmpc2_ros.core.export import write_atomically

CHECKPOINT_FORMAT = 1
MAGIC = b"TDMPC2ROS-CHECKPOINT-1 sha256="


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict, path: str | os.PathLike) -> str:
    """Write `state` to path atomically; return the file's sha256."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    payload = buf.getvalue()
    data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    write_atomically(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ("agent",)) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 65:
        raise CheckpointError(f"checkpoint {path} has no tdmpc2_ros header (not a checkpoint, or truncated)")
    header_end = len(MAGIC) + 64
    expected, payload = data[len(MAGIC) : header_end].decode(errors="replace"), data[header_end + 1 :]
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: its content does not match the sha256 in its header")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged archive
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a tdmpc2_ros checkpoint of format {CHECKPOINT_FORMAT}")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    state["sha256"] = hashlib.sha256(data).hexdigest()
    return state
