"""Where the world model trains: 'cpu' (the default), 'cuda' / 'cuda:N', or 'auto' (a GPU if torch
sees one). The planner a robot runs is always the exported ONNX graph; this only moves training."""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device for `name`, or a ValueError that says what this machine has."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), not {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU on this machine "
                             "(use device cpu, or auto to take a GPU only where there is one)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return device
