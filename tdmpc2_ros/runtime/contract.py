"""The metadata an exported planner graph carries, and the checks a caller makes against it.

The ONNX graph is the single contract between trainer and robot. Its metadata says what it eats
(observation spec), what it emits (action spec), how much it searches (budget) and where it came
from (preset, training step, checkpoint hash, format version). A caller declares what it will feed;
a mismatch is refused with both specs named, never papered over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from tdmpc2_ros.runtime.budget import PlanBudget

FORMAT_VERSION = 1
METADATA_KEY = "tdmpc2_ros"

# Graph signature. Inputs and outputs are named so that a robot never depends on their order.
INPUT_NAMES = ("obs", "prev_mean", "noise", "explore")
OUTPUT_NAMES = ("action", "next_mean", "plan_value", "action_std")


class SpecMismatch(ValueError):
    """What a caller feeds (or expects) does not match the model's declared spec."""


class ModelLoadError(RuntimeError):
    """A model file could not be loaded: missing, truncated, corrupt, or not one of ours."""


@dataclass(frozen=True)
class Spec:
    """A vector's contract: its length and, optionally, per-element names and bounds."""

    dim: int
    names: tuple[str, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def describe(self) -> str:
        parts = [f"dim={self.dim}"]
        if self.names:
            parts.append("names=[" + ", ".join(self.names) + "]")
        if self.low:
            parts.append(f"low={list(self.low)} high={list(self.high)}")
        return "(" + ", ".join(parts) + ")"

    def to_dict(self) -> dict:
        return {"dim": self.dim, "names": list(self.names), "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        return cls(int(d["dim"]), tuple(d.get("names", ())), tuple(d.get("low", ())), tuple(d.get("high", ())))


@dataclass(frozen=True)
class ModelContract:
    """Everything a robot must know about an exported planner before it may act with it."""

    obs: Spec
    action: Spec
    budget: PlanBudget
    preset: str
    task: str
    train_step: int
    checkpoint_sha256: str
    discount: float
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def noise_size(self) -> int:
        return self.budget.noise_size(self.action.dim)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": self.format_version,
                "obs": self.obs.to_dict(),
                "action": self.action.to_dict(),
                "budget": self.budget.to_dict(),
                "preset": self.preset,
                "task": self.task,
                "train_step": self.train_step,
                "checkpoint_sha256": self.checkpoint_sha256,
                "discount": self.discount,
                "noise_size": self.noise_size,
                "extra": self.extra,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelContract":
        try:
            d = json.loads(text)
            version = int(d["format_version"])
            if version != FORMAT_VERSION:
                raise ModelLoadError(
                    f"{source}: contract format version {version}, this runtime reads version {FORMAT_VERSION}"
                )
            return cls(
                obs=Spec.from_dict(d["obs"]),
                action=Spec.from_dict(d["action"]),
                budget=PlanBudget.from_dict(d["budget"]),
                preset=str(d["preset"]),
                task=str(d["task"]),
                train_step=int(d["train_step"]),
                checkpoint_sha256=str(d["checkpoint_sha256"]),
                discount=float(d["discount"]),
                format_version=version,
                extra=dict(d.get("extra", {})),
            )
        except ModelLoadError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{source}: metadata '{METADATA_KEY}' is malformed ({e})") from e

    def describe(self) -> str:
        return (
            f"obs{self.obs.describe()} action{self.action.describe()} "
            f"preset={self.preset} task={self.task} budget={self.budget.label()}"
        )

    def check_caller(self, obs_dim: int | None = None, action_dim: int | None = None, source: str = "model"):
        """Refuse a model whose spec differs from what the caller declares, naming both."""
        wrong = []
        if obs_dim is not None and obs_dim != self.obs.dim:
            wrong.append(f"observation dim {obs_dim} declared, {self.obs.dim} in model")
        if action_dim is not None and action_dim != self.action.dim:
            wrong.append(f"action dim {action_dim} declared, {self.action.dim} in model")
        if wrong:
            declared = f"(obs dim={obs_dim}, action dim={action_dim})"
            raise SpecMismatch(
                f"{source} does not match the caller: {'; '.join(wrong)}. "
                f"Model spec: {self.describe()}. Caller spec: {declared}."
            )

    def validate_obs(self, obs) -> np.ndarray:
        """Return obs as a float32 vector, or raise naming the expected spec. Never guesses."""
        arr = np.asarray(obs, dtype=np.float32)
        if arr.ndim != 1 or arr.shape[0] != self.obs.dim:
            raise SpecMismatch(
                f"observation has shape {tuple(arr.shape)}, expected a vector of spec {self.obs.describe()}"
            )
        if not np.all(np.isfinite(arr)):
            bad = np.flatnonzero(~np.isfinite(arr)).tolist()
            raise ValueError(
                f"observation holds NaN or Inf at indices {bad}; expected finite values of spec {self.obs.describe()}"
            )
        return arr
