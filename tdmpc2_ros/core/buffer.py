"""Replay buffer of whole episodes, sampled as sub-sequences of horizon + 1 observations.

Storage follows the reference layout: an episode of T transitions is T + 1 rows; row 0 holds the
first observation (its action and reward are NaN), row k holds o_k, a_{k-1}, r_{k-1}. A sampled
window never crosses an episode boundary. Rows live in a ring; the oldest are overwritten first.
"""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, action_dim: int, horizon: int, seed: int = 0):
        self.capacity, self.obs_dim, self.action_dim, self.horizon = capacity, obs_dim, action_dim, horizon
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.full((capacity, action_dim), np.nan, np.float32)
        self.reward = np.full((capacity,), np.nan, np.float32)
        self.terminated = np.zeros((capacity,), np.float32)
        self.episode = np.full((capacity,), -1, np.int64)  # which episode a row belongs to
        self.step = np.zeros((capacity,), np.int64)  # its index within that episode
        self.cursor, self.size, self.num_episodes = 0, 0, 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Transitions stored (rows that carry an action)."""
        return int(np.count_nonzero(self.step[: self.size] > 0))

    def add_episode(self, obs, action, reward, terminated=None):
        """obs [T+1, obs_dim], action [T, action_dim], reward [T]; terminated [T] (optional)."""
        obs = np.asarray(obs, np.float32)
        action = np.asarray(action, np.float32)
        if action.ndim == 1 and self.action_dim == 1:
            action = action[:, None]
        if action.ndim != 2 or action.shape[1] != self.action_dim:
            raise ValueError(f"action of shape {action.shape} does not fit obs_dim={self.obs_dim} action_dim={self.action_dim} "
                             f"(expected [T, {self.action_dim}])")
        reward = np.asarray(reward, np.float32).reshape(-1)
        T = action.shape[0]
        if obs.shape != (T + 1, self.obs_dim) or reward.shape != (T,):
            raise ValueError(
                f"episode shapes obs{obs.shape} action{action.shape} reward{reward.shape} do not fit "
                f"obs_dim={self.obs_dim} action_dim={self.action_dim} (expected T+1 observations for T actions)"
            )
        if T + 1 > self.capacity:
            raise ValueError(f"episode of {T + 1} rows exceeds the buffer capacity {self.capacity}")
        term = np.zeros(T, np.float32) if terminated is None else np.asarray(terminated, np.float32).reshape(-1)
        if term.shape != (T,):  # checked before anything is written: a refused episode leaves no trace
            raise ValueError(f"terminated has {term.shape[0]} entries for {T} transitions")
        rows = (self.cursor + np.arange(T + 1)) % self.capacity
        self.obs[rows] = obs
        self.action[rows[0]], self.reward[rows[0]], self.terminated[rows[0]] = np.nan, np.nan, 0.0
        self.action[rows[1:]], self.reward[rows[1:]], self.terminated[rows[1:]] = action, reward, term
        self.episode[rows] = self.num_episodes
        self.step[rows] = np.arange(T + 1)
        self.num_episodes += 1
        self.cursor = int((self.cursor + T + 1) % self.capacity)
        self.size = int(min(self.size + T + 1, self.capacity))

    def _valid_starts(self, starts: np.ndarray) -> np.ndarray:
        ends = (starts + self.horizon) % self.capacity
        same = self.episode[starts] == self.episode[ends]
        return same & (self.step[ends] - self.step[starts] == self.horizon)

    def sample(self, batch_size: int):
        """Windows as time-major arrays: obs [H+1, B, obs], action [H, B, A], reward [H, B, 1],
        terminated [H, B, 1]."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        starts = np.empty(0, np.int64)
        for _ in range(1000):
            cand = self.rng.integers(0, self.size, size=2 * batch_size)
            starts = np.concatenate([starts, cand[self._valid_starts(cand)]])
            if starts.shape[0] >= batch_size:
                break
        else:
            raise RuntimeError(f"the buffer holds no episode longer than the horizon ({self.horizon})")
        starts = starts[:batch_size]
        rows = (starts[None, :] + np.arange(self.horizon + 1)[:, None]) % self.capacity
        return (
            self.obs[rows],
            self.action[rows[1:]],
            self.reward[rows[1:]][..., None],
            self.terminated[rows[1:]][..., None],
        )

    def state_dict(self) -> dict:
        n = self.size
        return {
            "capacity": self.capacity,
            "obs": self.obs[:n].copy(),
            "action": self.action[:n].copy(),
            "reward": self.reward[:n].copy(),
            "terminated": self.terminated[:n].copy(),
            "episode": self.episode[:n].copy(),
            "step": self.step[:n].copy(),
            "cursor": self.cursor,
            "size": self.size,
            "num_episodes": self.num_episodes,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, d: dict):
        if d["capacity"] != self.capacity or d["obs"].shape[1:] != (self.obs_dim,):
            raise ValueError(
                f"buffer state (capacity {d['capacity']}, obs {d['obs'].shape[1:]}) does not fit this buffer "
                f"(capacity {self.capacity}, obs ({self.obs_dim},))"
            )
        n = d["size"]
        for name in ("obs", "action", "reward", "terminated", "episode", "step"):
            getattr(self, name)[:n] = d[name]
        self.cursor, self.size, self.num_episodes = d["cursor"], d["size"], d["num_episodes"]
        self.rng.bit_generator.state = d["rng"]
