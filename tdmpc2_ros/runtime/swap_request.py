"""What the hot-swap thread is asked to bring up (runtime/hot_swap.py): a new model version, or the
running version at another budget (a step down or up, runtime/budget_steps.py), or the standby below
the running budget (runtime/standby.py). A value: the loop makes one, the hot-swap thread reads it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """What the background thread is asked to bring up: a new model version (an announcement from
    the model store, or a path), or the running version at another budget (`rung`)."""

    announcement: dict | None = None  # a model store announcement (files and their sha256)
    path: str = ""  # a model folder or .onnx file
    version: str = ""
    rung: str = ""  # a budget label: the running version at that budget
    up: bool = False  # the rung is the next larger one (a step up, shadow-checked against the limit)
    expected_s: float | None = None  # what that rung's plans took at start-up, where known
    below: str = ""  # a standby: bring up the next smaller rung below this budget label (keep_standby)

    @classmethod
    def update(cls, announcement: dict) -> Request:
        return cls(announcement=announcement, version=str(announcement.get("version", "?")))

    @classmethod
    def model_path(cls, path: str, version: str = "") -> Request:
        return cls(path=path, version=version or path)

    @classmethod
    def budget(cls, label: str, path: str, version: str, up: bool = False, expected_s: float | None = None) -> Request:
        return cls(path=path, version=version, rung=label, up=up, expected_s=expected_s)

    @classmethod
    def standby(cls, below: str, path: str, version: str) -> Request:
        return cls(path=path, version=version, below=below)

    def describe(self) -> str:
        if self.below:
            return f"standby below {self.below}"
        if self.rung:
            return f"budget {'up to' if self.up else 'down to'} {self.rung}"
        return f"model update {self.version}"
