"""dm_control suite tasks as flat-vector environments with action repeat.

Actions in and out are normalised to [-1, 1] and mapped to the task's bounds. Observations are the
task's observation dict flattened in its (stable) key order. Rewards are summed over the repeats.
"""

from __future__ import annotations

import difflib
import os

import numpy as np

# Offscreen rendering by default: robots and CI machines have no display (EGL works without a GPU).
os.environ.setdefault("MUJOCO_GL", "egl")

EPISODE_SIM_STEPS = 1000  # every dm_control suite task, before action repeat


def parse_task(task: str) -> tuple[str, str]:
    """'cartpole-swingup' -> ('cartpole', 'swingup'); 'ball_in_cup-catch' and 'cup-catch' both work."""
    domain, _, name = task.partition("-")
    if not name:
        raise ValueError(f"task {task!r} is not of the form domain-task, e.g. cartpole-swingup")
    domain = {"cup": "ball_in_cup"}.get(domain, domain)
    return domain, name.replace("-", "_")


class DMControlEnv:
    def __init__(self, task: str, seed: int = 0, action_repeat: int = 2):
        from dm_control import suite

        domain, name = parse_task(task)
        if (domain, name) not in suite.ALL_TASKS:
            known = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
            close = difflib.get_close_matches(task, known, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; known tasks: {', '.join(sorted(known))}"
            raise ValueError(f"unknown dm_control task {task!r} ({domain}, {name}){hint}")
        self.task_name, self.action_repeat = task, action_repeat
        self._env = suite.load(domain, name, task_kwargs={"random": seed})
        spec = self._env.action_spec()
        self.action_low, self.action_high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_dim = int(spec.shape[0])
        self.obs_keys = list(self._env.observation_spec().keys())
        self.obs_names = tuple(self._obs_names())
        self.obs_dim = len(self.obs_names)
        self.episode_length = EPISODE_SIM_STEPS // action_repeat

    def contract_spec(self) -> dict:
        """Names and physical action bounds that an exported planner carries in its contract."""
        return {"obs_names": self.obs_names, "action_low": tuple(self.action_low.tolist()),
                "action_high": tuple(self.action_high.tolist())}

    def _obs_names(self):
        for key, spec in self._env.observation_spec().items():
            n = int(np.prod(spec.shape)) if spec.shape else 1
            yield from ([key] if n == 1 else [f"{key}[{i}]" for i in range(n)])

    def _flat(self, obs) -> np.ndarray:
        return np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.obs_keys])

    def reset(self) -> np.ndarray:
        return self._flat(self._env.reset().observation)

    def step(self, action) -> tuple[np.ndarray, float, bool]:
        """Apply a normalised action for action_repeat sim steps: (obs, summed reward, episode over)."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        a = self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)
        total = 0.0
        for _ in range(self.action_repeat):
            ts = self._env.step(a)
            total += ts.reward or 0.0
            if ts.last():
                break
        return self._flat(ts.observation), total, bool(ts.last())

    def render(self, height: int = 240, width: int = 320, camera_id: int = 0) -> np.ndarray:
        return self._env.physics.render(height=height, width=width, camera_id=camera_id)

    @property
    def physics(self):
        return self._env.physics

    # Exact resume needs the task's random stream (it draws each episode's initial state).
    def random_state(self):
        return self._env.task.random.get_state()

    def set_random_state(self, state):
        self._env.task.random.set_state(state)


def make_env(task: str, seed: int = 0, action_repeat: int = 2) -> DMControlEnv:
    return DMControlEnv(task, seed, action_repeat)
