"""The TD-MPC2 agent: one entry point per thing a user does (act, update, state for checkpoints).

Losses and weights follow the reference: 20 * consistency + 0.1 * reward + 0.1 * value
(+ 1 * termination when episodic), each step weighted by rho^t and averaged over the horizon; TD
targets bootstrap from the minimum of 2 random members of an EMA target ensemble.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tdmpc2_ros.core.config import ModelConfig, TrainConfig
from tdmpc2_ros.core.device import resolve_device
from tdmpc2_ros.core.planners import make_planner
from tdmpc2_ros.core.scale import RunningScale
from tdmpc2_ros.core.world_model import WorldModel
from tdmpc2_ros.runtime.budget import PlanBudget


class TDMPC2:
    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, budget: PlanBudget, discount: float, seed: int = 0,
                 act_backend: str = "torch", threads: int = 2, device: str = "cpu"):
        self.model_cfg, self.cfg, self.budget, self.discount = model_cfg, train_cfg, budget, float(discount)
        self.device = resolve_device(device)
        if act_backend == "auto":  # ONNX Runtime on a CPU; on a GPU the torch planner beside the weights
            act_backend = "onnx" if self.device.type == "cpu" else "torch"
        if act_backend not in ("torch", "onnx"):
            raise ValueError(f"act_backend must be 'auto', 'torch' or 'onnx', not {act_backend!r}")
        if act_backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"act_backend 'onnx' plans on the CPU with the live weights, which are on {self.device}; "
                             "use act_backend 'torch' or 'auto' there")
        # "onnx": plan through a live-weights ONNX graph (same numbers, about twice as fast on a CPU).
        self.act_backend, self.threads, self._actor = act_backend, threads, None
        self.graphs = False  # compile(mode="graphs") sets it
        if budget.horizon != train_cfg.horizon:
            raise ValueError(f"planning horizon {budget.horizon} differs from the training horizon {train_cfg.horizon}")
        torch.manual_seed(seed)
        # Initialised on the CPU, then moved: the same seed gives the same weights on every device.
        self.model = WorldModel(model_cfg).eval().to(self.device)
        m, lr = self.model, train_cfg.lr
        heads = [m._dynamics, m._reward, m._Qs] + ([m._termination] if m._termination is not None else [])
        self.optim = torch.optim.Adam(
            [
                {"params": m._encoder.parameters(), "lr": lr * train_cfg.enc_lr_scale},
                {"params": [p for h in heads for p in h.parameters()]},
            ],
            lr=lr,
            fused=True,  # one kernel over all tensors: 1.9 -> 0.8 ms a step on 2 cores (docs/benchmarks.md)
        )
        self.pi_optim = torch.optim.Adam(m._pi.parameters(), lr=lr, eps=1e-5, fused=True)
        self.scale = RunningScale(train_cfg.tau, self.device)
        self.planner = make_planner(self.model, budget, discount)
        self.plan_rng = torch.Generator().manual_seed(seed + 1)  # CPU draws: the same plans on every device
        self.prev_mean = torch.zeros(budget.horizon, model_cfg.action_dim, device=self.device)
        self.rho = (train_cfg.rho ** torch.arange(train_cfg.horizon + 1, dtype=torch.float32)).to(self.device)

    # -- acting -------------------------------------------------------------------------------
    def act(self, obs, t0: bool = False, explore: bool = False) -> np.ndarray:
        """Plan one action in [-1, 1] with the same module that is exported to ONNX."""
        obs = np.asarray(obs, np.float32)
        if obs.shape != (self.model_cfg.obs_dim,) or not np.all(np.isfinite(obs)):
            raise ValueError(
                f"observation of shape {obs.shape} (finite: {bool(np.all(np.isfinite(obs)))}) does not fit "
                f"the model's observation spec (dim={self.model_cfg.obs_dim}, finite)"
            )
        if t0:
            self.prev_mean.zero_()
        noise = torch.randn(self.budget.noise_size(self.model_cfg.action_dim), generator=self.plan_rng)
        if self.act_backend == "onnx":
            if self._actor is None:  # traced on first use: seed steps never pay for it
                from tdmpc2_ros.core.export import LiveOnnxActor

                self._actor = LiveOnnxActor(self.model, self.budget, self.discount, threads=self.threads)
            action, self.prev_mean, _, _ = self._actor(torch.from_numpy(obs), self.prev_mean, noise, torch.tensor([float(explore)]))
            return action.numpy()
        grad_ctx = torch.enable_grad() if self.budget.planner == "gradient" else torch.no_grad()
        dev = self.device
        self._new_graph_step()
        with grad_ctx:
            action, mean, _, _ = getattr(self, "_plan", self.planner)(
                torch.from_numpy(obs).to(dev), self.prev_mean, noise.to(dev), torch.tensor([float(explore)], device=dev))
        self.prev_mean = mean.detach().clone()  # a copy: a graph's output is overwritten at its next replay
        return action.detach().cpu().numpy()

    # -- learning -----------------------------------------------------------------------------
    def _random_pair(self) -> torch.Tensor:
        return torch.randperm(self.model_cfg.num_q)[:2].to(self.device)  # drawn on the CPU RNG on every device

    @torch.no_grad()
    def td_target(self, next_z, reward, terminated, pair):
        action = self.model.pi(next_z)[0]
        q = self.model.Q(next_z, action, pair, reduce="min", target=True)
        return reward + self.discount * (1 - terminated) * q

    def model_loss(self, obs, action, reward, terminated, pair):
        """The world-model loss on a batch of windows, and its parts (pair: the 2 target members)."""
        H, cfg, m = action.shape[0], self.cfg, self.model
        with torch.no_grad():
            next_z = m.encode(obs[1:])
            td = self.td_target(next_z, reward, terminated, pair)
        z = m.encode(obs[0])
        zs = [z]
        consistency = 0.0
        for t in range(H):
            z = m.next(z, action[t])
            consistency = consistency + F.mse_loss(z, next_z[t]) * self.rho[t]
            zs.append(z)
        zs = torch.stack(zs)
        q_logits = m.Q_logits(zs[:-1], action)  # [E, H, B, bins]
        reward_logits = m.reward(zs[:-1], action)
        rho = self.rho[:H].reshape(H, 1, 1)
        reward_loss = (m.two_hot.soft_ce(reward_logits, reward) * rho).mean(dim=(1, 2)).sum() / H
        value_loss = (m.two_hot.soft_ce(q_logits, td.unsqueeze(0)) * rho).mean(dim=(2, 3)).sum() / (H * self.model_cfg.num_q)
        consistency = consistency / H
        loss = cfg.consistency_coef * consistency + cfg.reward_coef * reward_loss + cfg.value_coef * value_loss
        termination_loss = obs.new_zeros(())  # on the batch's device: a CPU tensor would stop a CUDA graph
        if m._termination is not None:
            termination_loss = F.binary_cross_entropy_with_logits(m.termination_logit(zs[1:]), terminated)
            loss = loss + cfg.termination_coef * termination_loss
        return loss, (consistency, reward_loss, value_loss, termination_loss), zs

    def compile(self, mode: str = "auto"):
        """Compile the world-model loss and the policy's Q evaluation (forward and backward) with
        torch.compile: about a minute once, then a faster update for a long run. The optimiser
        steps and the running Q scale stay eager.

        mode "graphs" also captures them as CUDA graphs (torch's "reduce-overhead"), and the torch
        planner that acts: below the 317M preset a GPU update is bound by kernel launches, not by
        arithmetic (docs/benchmarks.md), and a graph replays all of them in one launch. "auto" is
        "graphs" on a GPU and "default" on a CPU (there are no CUDA graphs on a CPU)."""
        if mode == "auto":
            mode = "graphs" if self.device.type == "cuda" else "default"
        if mode not in ("default", "graphs"):
            raise ValueError(f"compile mode must be 'auto', 'default' or 'graphs', not {mode!r}")
        if mode == "graphs" and self.device.type != "cuda":
            raise ValueError(f"compile mode 'graphs' (CUDA graphs) needs a GPU; this agent is on {self.device}")
        torch_mode = "reduce-overhead" if mode == "graphs" else "default"
        self._model_loss = torch.compile(self.model_loss, dynamic=False, mode=torch_mode)
        self._pi_value = torch.compile(self.pi_value, dynamic=False, mode=torch_mode)
        self.graphs = mode == "graphs"
        if self.graphs and self.act_backend == "torch" and self.budget.planner != "gradient":
            # The gradient planner differentiates inside its forward, which a graph cannot hold.
            self._plan = torch.compile(self.planner, dynamic=False, mode=torch_mode)

    def _new_graph_step(self):
        """With CUDA graphs, a graph's outputs live in memory its next replay overwrites. Each act
        and each update says it begins a new step, and keeps (clones) what it needs afterwards."""
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def update(self, obs, action, reward, terminated) -> dict[str, float]:
        """One gradient step on a batch of windows (time-major numpy or torch arrays)."""
        obs, action, reward, terminated = (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)
                                           for x in (obs, action, reward, terminated))
        m = self.model
        m.train()
        self._new_graph_step()
        loss_fn = getattr(self, "_model_loss", self.model_loss)
        loss, (consistency, reward_loss, value_loss, termination_loss), zs = loss_fn(obs, action, reward, terminated, self._random_pair())
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(m.parameters(), self.cfg.grad_clip_norm)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        pi_loss = self.update_pi(zs.detach())
        m.soft_update_target(self.cfg.tau)
        m.eval()
        # One read back for all of them: on a GPU each float() would wait for the device on its own.
        values = torch.stack([consistency, reward_loss, value_loss, termination_loss, pi_loss, loss, grad_norm,
                              self.scale.value.reshape(())]).detach().tolist()
        return dict(zip(("consistency_loss", "reward_loss", "value_loss", "termination_loss", "pi_loss", "total_loss",
                         "grad_norm", "pi_scale"), values))

    def pi_value(self, zs: torch.Tensor, pair: torch.Tensor):
        """The policy's action log-probabilities and their Q (mean of the 2 members in `pair`)."""
        action, _, log_prob = self.model.pi(zs)
        return log_prob, self.model.Q(zs, action, pair, reduce="avg")

    def update_pi(self, zs: torch.Tensor) -> torch.Tensor:
        """Maximise Q(z, pi(z)) / S plus 1e-4 * entropy; Q's own weights are held fixed."""
        m = self.model
        m._Qs.requires_grad_(False)
        try:
            log_prob, q = getattr(self, "_pi_value", self.pi_value)(zs, self._random_pair())
        finally:
            m._Qs.requires_grad_(True)
        self.scale.update(q[0])
        q = self.scale(q)
        entropy = -log_prob
        loss = (-(self.cfg.entropy_coef * entropy + q).mean(dim=(1, 2)) * self.rho[: zs.shape[0]]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m._pi.parameters(), self.cfg.grad_clip_norm)
        self.pi_optim.step()
        self.pi_optim.zero_grad(set_to_none=True)
        return loss.detach()

    # -- persistence --------------------------------------------------------------------------
    @property
    def updates(self) -> int:
        """Gradient steps taken so far (Adam's own counter)."""
        state = self.optim.state_dict()["state"]
        return int(next(iter(state.values()))["step"]) if state else 0

    def state_dict(self) -> dict:
        """Everything an exact resume needs. Tensors stay on the agent's device (checkpoints load
        onto the CPU, and from there onto any device)."""
        state = {
            "model": self.model.state_dict(),
            "optim": self.optim.state_dict(),
            "pi_optim": self.pi_optim.state_dict(),
            "scale": self.scale.state_dict(),
            "plan_rng": self.plan_rng.get_state(),
            "prev_mean": self.prev_mean.detach().cpu().clone(),
        }
        if self.device.type == "cuda":  # the policy's and dropout's draws come from the GPU's generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, d: dict):
        """Apply a saved state, or raise without changing anything (torch would copy every tensor
        whose shape fits before failing on the first that does not)."""
        current = self.model.state_dict()
        incoming = d["model"]
        wrong = [k for k in current if k not in incoming or tuple(incoming[k].shape) != tuple(current[k].shape)]
        extra = [k for k in incoming if k not in current]
        if wrong or extra:
            shapes = [f"{k}: saved shape {tuple(incoming[k].shape) if k in incoming else 'missing'}, "
                      f"this agent's shape {tuple(current[k].shape)}" for k in wrong[:5]]
            raise ValueError(f"saved model does not fit this agent ({self.model_cfg.preset}, obs {self.model_cfg.obs_dim}, "
                             f"action {self.model_cfg.action_dim}): {'; '.join(shapes)}; unexpected keys {extra[:5]}")
        self.model.load_state_dict(incoming)
        for optim, key in ((self.optim, "optim"), (self.pi_optim, "pi_optim")):
            optim.load_state_dict(d[key])
            for group in optim.param_groups:  # a checkpoint from before fused Adam carries foreach=True
                group["foreach"], group["fused"] = None, True
        self.scale.load_state_dict(d["scale"])
        self.plan_rng.set_state(d["plan_rng"])
        self.prev_mean = d["prev_mean"].to(self.device).clone()
        if self.device.type == "cuda" and "cuda_rng" in d:
            torch.cuda.set_rng_state(d["cuda_rng"].cpu(), self.device)
