"""Running scale of Q for the policy loss: an EMA of the 5th-95th percentile range, at least 1."""

from __future__ import annotations

import torch


class RunningScale:
    def __init__(self, tau: float):
        self.tau = tau
        self.value = torch.ones(())

    @torch.no_grad()
    def update(self, q: torch.Tensor):
        lo, hi = torch.quantile(q.detach().flatten().float(), torch.tensor([0.05, 0.95]))
        self.value.lerp_(torch.clamp(hi - lo, min=1.0), self.tau)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return q / self.value

    def state_dict(self) -> dict:
        return {"value": self.value.clone(), "tau": self.tau}

    def load_state_dict(self, d: dict):
        self.value, self.tau = d["value"].clone(), d["tau"]
