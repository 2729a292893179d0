"""Online TD-MPC2 training against a dm_control task: seed steps with random actions, pre-training
updates, then one update per agent step; periodic evaluation of the exported ONNX planner;
checkpoints at episode boundaries from which a run resumes exactly.

Step counts given to and reported by this module are environment steps (action repeat included),
as the paper counts them.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tdmpc2_ros.core.agent import TDMPC2
from tdmpc2_ros.core.buffer import ReplayBuffer
from tdmpc2_ros.core.config import ModelConfig, TrainConfig, heuristic_discount, seed_steps_for
from tdmpc2_ros.core.export import export_planner
from tdmpc2_ros.envs import make_env
from tdmpc2_ros.runtime import PlanBudget
from tdmpc2_ros.runtime.digest import file_sha256
from tdmpc2_ros.training.checkpoint import load_checkpoint, save_checkpoint
from tdmpc2_ros.training.curves import CsvLog, plot_learning_curve
from tdmpc2_ros.training.evaluate import evaluate_onnx


@dataclass
class RunConfig:
    task: str = "cartpole-swingup"
    steps: int = 100_000  # environment steps, action repeat included
    preset: str = "1M"
    seed: int = 1
    planner: str = "mppi"
    action_repeat: int = 2
    eval_freq: int = 10_000  # environment steps between evaluations
    eval_episodes: int = 10
    checkpoint_freq: int = 10_000
    batch_size: int = 256
    threads: int = 2
    seed_steps: int | None = None  # agent steps; None: max(1000, 5 episodes)
    buffer_size: int = 1_000_000
    act_backend: str = "auto"  # onnx: ONNX Runtime with live weights; torch: the eager planner; auto: onnx on a CPU
    compile: bool = False  # torch.compile the world-model loss: ~30 s once, ~10% faster updates
    device: str = "cpu"  # where the world model trains: cpu, cuda, cuda:N or auto

    def to_dict(self):
        return asdict(self)


class OnlineTrainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        self.cfg, self.run_dir, self.show_progress = cfg, Path(run_dir), show_progress
        torch.set_num_threads(cfg.threads)
        self.env = make_env(cfg.task, seed=cfg.seed, action_repeat=cfg.action_repeat)  # an unknown task: no run folder
        self.run_dir.mkdir(parents=True, exist_ok=True)
        L = self.env.episode_length
        self.seed_steps = cfg.seed_steps if cfg.seed_steps is not None else seed_steps_for(L)
        if self.seed_steps < L:
            raise ValueError(f"seed_steps ({self.seed_steps}) must cover at least one episode ({L} agent steps): "
                             "learning starts from whole episodes in the buffer")
        self.discount = heuristic_discount(L)  # 0.99 for dm_control (500 agent steps per episode)
        self.model_cfg = ModelConfig.from_preset(cfg.preset, self.env.obs_dim, self.env.action_dim)
        self.train_cfg = TrainConfig(batch_size=cfg.batch_size, buffer_size=cfg.buffer_size)
        self.budget = PlanBudget.reference(self.env.action_dim, planner=cfg.planner)
        self.agent = TDMPC2(self.model_cfg, self.train_cfg, self.budget, self.discount, seed=cfg.seed,
                           act_backend=cfg.act_backend, threads=cfg.threads, device=cfg.device)
        if cfg.compile:
            self.agent.compile()
        self.buffer = ReplayBuffer(cfg.buffer_size, self.env.obs_dim, self.env.action_dim, self.train_cfg.horizon, seed=cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        random.seed(cfg.seed)
        self.agent_step, self.episode = 0, 0
        self.last_eval_step, self.last_ckpt_step = 0, 0
        self.train_log = CsvLog(self.run_dir / "train.csv", ["step", "episode", "episode_reward", "wall_s"])
        self.eval_log = CsvLog(self.run_dir / "eval.csv", ["step", "episode_reward", "episode_reward_std", "episodes", "wall_s"])
        self.metrics_log = CsvLog(self.run_dir / "metrics.csv", ["step", "consistency_loss", "reward_loss", "value_loss", "pi_loss", "grad_norm", "pi_scale"])
        self.wall_offset = 0.0
        if resume and (self.run_dir / "checkpoint.pt").exists():
            self._restore(load_checkpoint(self.run_dir / "checkpoint.pt", required=("agent", "buffer", "trainer")))
        (self.run_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))

    # -- persistence ---------------------------------------------------------------------------
    @property
    def env_step(self) -> int:
        return self.agent_step * self.cfg.action_repeat

    def _state(self) -> dict:
        return {
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "trainer": {
                "run_config": self.cfg.to_dict(),
                "model_config": self.model_cfg.to_dict(),
                "train_config": self.train_cfg.to_dict(),
                "budget": self.budget.to_dict(),
                "discount": self.discount,
                "agent_step": self.agent_step,
                "episode": self.episode,
                "last_eval_step": self.last_eval_step,
                "last_ckpt_step": self.last_ckpt_step,
                "wall_s": self.wall_s(),
                "np_rng": self.rng.bit_generator.state,
                "py_rng": random.getstate(),
                "torch_rng": torch.get_rng_state(),
                "env_rng": self.env.random_state(),
            },
        }

    def _restore(self, state: dict):
        t = state["trainer"]
        if t["model_config"] != self.model_cfg.to_dict():
            raise ValueError(f"checkpoint model {t['model_config']} differs from this run's {self.model_cfg.to_dict()}")
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self.agent_step, self.episode = t["agent_step"], t["episode"]
        self.last_eval_step, self.last_ckpt_step = t["last_eval_step"], t["last_ckpt_step"]
        self.wall_offset = t["wall_s"]
        self.rng.bit_generator.state = t["np_rng"]
        random.setstate(t["py_rng"])
        torch.set_rng_state(t["torch_rng"])
        self.env.set_random_state(t["env_rng"])
        for log in (self.train_log, self.eval_log, self.metrics_log):
            log.truncate_after(self.env_step)

    def save(self) -> str:
        self.last_ckpt_step = self.env_step
        return save_checkpoint(self._state(), self.run_dir / "checkpoint.pt")

    def wall_s(self) -> float:
        return self.wall_offset + time.monotonic() - self._t_start if hasattr(self, "_t_start") else self.wall_offset

    # -- the loop --------------------------------------------------------------------------------
    def _update(self, count: int) -> dict:
        metrics = {}
        for _ in range(count):
            metrics = self.agent.update(*self.buffer.sample(self.cfg.batch_size))
        return metrics

    def _collect_episode(self, bar) -> float:
        obs = self.env.reset()
        observations, actions, rewards = [obs], [], []
        done, t0 = False, True
        while not done:
            if self.agent_step <= self.seed_steps:
                action = self.rng.uniform(-1.0, 1.0, self.env.action_dim).astype(np.float32)
            else:
                action = self.agent.act(obs, t0=t0, explore=True)
            obs, reward, done = self.env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            t0 = False
            if self.agent_step >= self.seed_steps:
                pretraining = self.agent_step == self.seed_steps
                if pretraining and bar is not None:
                    bar.set_description(f"pre-training ({self.seed_steps} updates)")
                metrics = self._update(self.seed_steps if pretraining else 1)
                if pretraining and bar is not None:
                    bar.set_description("training")
                if self.agent_step % 500 == 0:
                    self.metrics_log.append(step=self.env_step, **metrics)
            self.agent_step += 1
            if bar is not None:
                bar.update(self.cfg.action_repeat)
        self.buffer.add_episode(np.stack(observations), np.stack(actions), np.array(rewards))
        self.episode += 1
        return float(sum(rewards))

    def export(self, path: Path, checkpoint_sha: str = "") -> Path:
        export_planner(
            self.agent.model, self.budget, self.discount, path, task=self.cfg.task, train_step=self.env_step,
            checkpoint_sha256=checkpoint_sha, **self.env.contract_spec(),
        )
        return path

    def evaluate(self, episodes: int) -> list[float]:
        path = self.export(self.run_dir / "eval_planner.onnx")
        return evaluate_onnx(path, self.cfg.task, episodes, seed=self.cfg.seed + 10_000 + self.env_step,
                             action_repeat=self.cfg.action_repeat, threads=self.cfg.threads)

    def run(self) -> dict:
        total = self.cfg.steps
        self._t_start = time.monotonic()
        # A log file is not a terminal: redraw the bar rarely there.
        bar = tqdm(total=total, initial=self.env_step, unit="step", desc="training", dynamic_ncols=True,
                   disable=not self.show_progress, mininterval=0.5 if sys.stderr.isatty() else 60.0)
        last_eval = None
        while self.env_step < total:
            ret = self._collect_episode(bar)
            self.train_log.append(step=self.env_step, episode=self.episode, episode_reward=round(ret, 3), wall_s=round(self.wall_s(), 1))
            if self.env_step - self.last_eval_step >= self.cfg.eval_freq or self.env_step >= total:
                returns = self.evaluate(self.cfg.eval_episodes)
                self.last_eval_step = self.env_step
                last_eval = float(np.mean(returns))
                self.eval_log.append(step=self.env_step, episode_reward=round(last_eval, 3), episode_reward_std=round(float(np.std(returns)), 3),
                                     episodes=len(returns), wall_s=round(self.wall_s(), 1))
                self.plot()
            if self.env_step - self.last_ckpt_step >= self.cfg.checkpoint_freq or self.env_step >= total:
                self.save()
            bar.set_postfix(episode_return=f"{ret:.0f}", eval=f"{last_eval:.0f}" if last_eval is not None else "-")
        bar.close()
        return self.finish()

    def plot(self):
        plot_learning_curve(self.eval_log.read(), self.train_log.read(), self.cfg.task, self.run_dir / "learning_curve.png",
                            title_extra=f"({self.cfg.preset}, seed {self.cfg.seed})")

    def finish(self) -> dict:
        """Final artefacts: checkpoint, weights, ONNX planner, summary."""
        sha = self.save()
        weights = {k: v.cpu() for k, v in self.agent.model.state_dict().items()}  # loads on any machine
        torch.save({"model": weights, "model_config": self.model_cfg.to_dict(),
                    "discount": self.discount, "budget": self.budget.to_dict(), "task": self.cfg.task,
                    "env_step": self.env_step, "updates": self.agent.updates}, self.run_dir / "weights.pt")
        self.export(self.run_dir / "planner.onnx", checkpoint_sha=file_sha256(self.run_dir / "weights.pt"))
        evals = self.eval_log.read()
        summary = {
            "task": self.cfg.task, "preset": self.cfg.preset, "seed": self.cfg.seed, "env_steps": self.env_step,
            "final_eval_return": float(evals[-1]["episode_reward"]) if evals else None,
            "eval_episodes": int(evals[-1]["episodes"]) if evals else 0,
            "checkpoint_sha256": sha, "planner_sha256": file_sha256(self.run_dir / "planner.onnx"),
            "weights_sha256": file_sha256(self.run_dir / "weights.pt"), "wall_s": round(self.wall_s(), 1),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.plot()
        return summary

