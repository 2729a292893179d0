"""Running scale of Q for the policy loss: an EMA of the 5th-95th percentile range, at least 1."""

from __future__ import annotations

import torch


class RunningScale:
    def __init__(self, tau: float, device: torch.device | str = "cpu"):
        self.tau = tau
        self.value = torch.ones((), device=device)
        self._levels = torch.tensor([0.05, 0.95], device=device)  # made once: on a GPU, each would be a copy

    @torch.no_grad()
    def update(self, q: torch.Tensor):
        lo, hi = torch.quantile(q.detach().flatten().float(), self._levels)
        self.value.lerp_(torch.clamp(hi - lo, min=1.0), self.tau)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return q / self.value

    def state_dict(self) -> dict:
        return {"value": self.value.detach().cpu().clone(), "tau": self.tau}

    def load_state_dict(self, d: dict):
        self.value, self.tau = d["value"].to(self.value.device).clone(), d["tau"]
