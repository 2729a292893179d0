"""Evaluate a planner (torch agent or exported ONNX graph) on a dm_control task, without exploration."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tdmpc2_ros.envs import DMControlEnv


def run_episode(env: DMControlEnv, act: Callable[[np.ndarray, bool], np.ndarray], on_frame=None) -> float:
    """One episode; act(obs, t0) -> action. Returns the episode's return."""
    obs, done, total, t0 = env.reset(), False, 0.0, True
    while not done:
        obs, reward, done = env.step(act(obs, t0))
        total += reward
        t0 = False
        if on_frame is not None:
            on_frame(env)
    return total


def evaluate_onnx(model_path, task: str, episodes: int, seed: int = 0, action_repeat: int = 2, threads: int = 2,
                  video_path=None) -> list[float]:
    """Returns of `episodes` evaluation episodes of the exported planner (one ORT call per step)."""
    from tdmpc2_ros.runtime import OnnxPlanner

    env = DMControlEnv(task, seed=seed, action_repeat=action_repeat)
    planner = OnnxPlanner(model_path, env.obs_dim, env.action_dim, threads=threads, seed=seed)

    def act(obs, t0):
        if t0:
            planner.reset()
        return planner.plan(obs, explore=False).action

    returns = []
    for i in range(episodes):
        frames: list = []
        grab = (lambda e: frames.append(e.render())) if (video_path and i == 0) else None
        returns.append(run_episode(env, act, grab))
        if frames:
            import imageio.v2 as imageio

            imageio.mimsave(str(video_path), frames, fps=int(round(1 / (env.physics.timestep() * action_repeat))))
    return returns
