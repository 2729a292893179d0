"""A MuJoCo simulation stepped with commands in physical units (pure Python: no ROS, no torch).

``SimEngine`` is the simulator behind ``tdmpc2_ros.ros.sim_node``. It has two sources:

* ``SimEngine.from_task("cartpole-swingup", seed=0, action_repeat=2)``: any dm_control suite
  domain-task pair. The task observation is the suite's observation dict flattened in its key order
  with the element names of ``tdmpc2_ros.envs.dmc.DMControlEnv`` (so a policy trained on
  ``DMControlEnv`` sees the same vector). The episode ends at the task's time limit (1000
  environment steps, i.e. 500 control steps at action repeat 2).
* ``SimEngine.from_mjcf(path, reward, episode_steps=500, action_repeat=2, seed=0)``: a user's MJCF
  file loaded with plain ``mujoco``. The task observation is ``[qpos, qvel]`` (names
  ``qpos/<joint>`` and ``qvel/<joint>``, with ``[i]`` suffixes for free/ball joints); the episode
  ends after ``episode_steps`` control steps or when the optional ``done`` expression is true.

Reward configuration (``from_mjcf``)
------------------------------------
A dict (a bare string is shorthand for ``{"expression": <string>}``)::

    {"expression": "cos(qpos[0]) - 0.001 * ctrl[0] ** 2",  # required: reward of ONE physics step
     "done": "abs(joint['hinge'][1]) > 50"}                 # optional: ends the episode when true

Both are Python/numpy expressions (runtime/expressions.py) evaluated after every physics step (the
reward of a control step is the sum over its ``action_repeat`` physics steps, as in dm_control) with
only these names besides that module's helpers (``np``, ``cos``, ..., ``tolerance``):

=============  =================================================================================
``qpos``       copy of ``data.qpos`` (numpy float64 array)
``qvel``       copy of ``data.qvel``
``ctrl``       copy of ``data.ctrl`` (the clipped command being applied, physical units)
``joint``      dict: hinge/slide joint name -> ``(position, velocity)`` (rad, rad/s or m, m/s)
``time``       simulated seconds since the episode started
=============  =================================================================================

Unknown keys and expressions that fail on the initial state raise ``ValueError`` at construction.
A reward expression is trusted configuration, like the MJCF file itself.

Units and conventions
---------------------
* Commands given to ``step`` are in PHYSICAL units, one value per actuator in model order — what a
  ros2_control forward command controller would receive (for a motor: ``ctrl``, the actuator input
  that the MJCF ``gear`` turns into force). They are clipped to ``[action_low, action_high]`` (the
  actuator ``ctrlrange``, or the dm_control action spec; +-inf where an actuator is unlimited).
* ``step`` applies one command for a control step of ``action_repeat`` physics steps. A driver that
  takes each new command at the next physics step (sim_node's ``joint_states_rate: physics``) calls
  ``physics_step(command)`` until it returns True, then ``finish_step()``: the same step, its command
  free to change between its physics steps. ``last_step_commands`` then says how many different
  commands the finished step applied (more than 1: no one command produced it).
* ``joint_names`` lists hinge and slide joints only, in model order; free and ball joints have no
  single position and are skipped (their state is still in the MJCF observation). Positions and
  velocities are in REP-103 units (rad, rad/s for hinges; m, m/s for slides).
* A simulation that diverges (a position, velocity, acceleration or control MuJoCo calls bad: NaN,
  Inf or huge; a wild command to an unlimited actuator, say) ends its episode: ``step`` raises
  ``PhysicsDiverged`` and the engine needs a ``reset()``. MuJoCo itself would quietly reset the state
  inside the step (or dm_control raise its PhysicsError), which would pass for a transition and teach
  a model a jump that never happened.
* ``physics_dt`` is one environment step (a dm_control control timestep, or the MJCF
  ``opt.timestep``); ``control_dt = physics_dt * action_repeat``. ``time`` is simulated seconds since
  the engine was built and keeps increasing across episodes (a monotonic clock for ``/clock``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from tdmpc2_ros.runtime.expressions import Expression

_HINGE_SLIDE = (2, 3)  # mujoco.mjtJoint.mjJNT_SLIDE, mjJNT_HINGE
_JOINT_QPOS = {0: 7, 1: 4, 2: 1, 3: 1}  # free, ball, slide, hinge
_JOINT_QVEL = {0: 6, 1: 3, 2: 1, 3: 1}
_TRN_JOINT = 0  # mujoco.mjtTrn.mjTRN_JOINT
_REWARD_KEYS = ("expression", "done")


class PhysicsDiverged(RuntimeError):
    """The simulation diverged during a step: the episode is over, and reset() comes next."""


def _instability_count(data) -> int:
    """How often MuJoCo found a bad (NaN, Inf or huge) position, velocity or acceleration and reset the
    state itself, or a bad control and zeroed it: the warnings it raises for an unstable simulation."""
    import mujoco

    w = mujoco.mjtWarning
    return sum(int(data.warning[k].number) for k in (w.mjWARN_BADQPOS, w.mjWARN_BADQVEL, w.mjWARN_BADQACC,
                                                      w.mjWARN_BADCTRL))


def _name(model, objtype: str, i: int, fallback: str) -> str:
    import mujoco

    obj = {"joint": mujoco.mjtObj.mjOBJ_JOINT, "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR}[objtype]
    return mujoco.mj_id2name(model, obj, i) or f"{fallback}{i}"


class _DMCBackend:
    """A dm_control suite task; actions go to ``env.step`` unchanged (already physical)."""

    def __init__(self, task: str, seed: int):
        from dm_control import suite

        from tdmpc2_ros.envs.dmc import EPISODE_SIM_STEPS, parse_task

        domain, name = parse_task(task)
        if (domain, name) not in suite.ALL_TASKS:
            known = ", ".join(f"{d}-{t}" for d, t in suite.ALL_TASKS)
            raise ValueError(f"unknown dm_control task {task!r}; known tasks: {known}")
        self.name = task
        self.env = suite.load(domain, name, task_kwargs={"random": seed})
        spec = self.env.action_spec()
        self.action_low = np.asarray(spec.minimum, np.float64).reshape(-1).copy()
        self.action_high = np.asarray(spec.maximum, np.float64).reshape(-1).copy()
        self.physics_dt = float(self.env.control_timestep())
        self.step_limit = int(getattr(self.env, "_step_limit", EPISODE_SIM_STEPS))
        self.obs_keys = list(self.env.observation_spec().keys())
        names = []
        for key, s in self.env.observation_spec().items():
            n = int(np.prod(s.shape)) if s.shape else 1
            names += [key] if n == 1 else [f"{key}[{i}]" for i in range(n)]
        self.obs_names = tuple(names)
        self._obs = None

    @property
    def model(self):
        return self.env.physics.model.ptr

    @property
    def data(self):
        return self.env.physics.data.ptr

    def _flat(self, obs) -> np.ndarray:
        return np.concatenate([np.asarray(obs[k], np.float64).reshape(-1) for k in self.obs_keys])

    def reset(self) -> None:
        self._obs = self._flat(self.env.reset().observation)

    def substep(self, ctrl: np.ndarray) -> tuple[float, bool]:
        from dm_control.rl.control import PhysicsError

        try:
            ts = self.env.step(ctrl)
        except PhysicsError as e:
            raise PhysicsDiverged(str(e)) from e
        self._obs = self._flat(ts.observation)
        return float(ts.reward or 0.0), bool(ts.last())

    def observation(self) -> np.ndarray:
        if self._obs is None:  # before the first reset: the task's view of the initial physics
            self._obs = self._flat(self.env.task.get_observation(self.env.physics))
        return self._obs

    def render(self, width: int, height: int, camera) -> np.ndarray:
        return self.env.physics.render(height=height, width=width, camera_id=0 if camera is None else camera)

    def close(self) -> None:
        self.env.close()


class _MJCFBackend:
    """A user's MJCF file in plain mujoco, with the reward (and optional termination) from config."""

    def __init__(self, path: str, reward: dict | str, seed: int, reset_noise: float):
        import mujoco

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MJCF file not found: {path!r}")
        try:
            self.model = mujoco.MjModel.from_xml_path(path)
        except ValueError as e:  # mujoco reports XML/compile errors as ValueError
            raise ValueError(f"cannot load MJCF file {path!r}: {e}") from e
        self.data = mujoco.MjData(self.model)
        self.name = f"mjcf:{os.path.basename(path)}"
        self._rng = np.random.default_rng(seed)
        self.reset_noise = float(reset_noise)
        m = self.model
        self.physics_dt = float(m.opt.timestep)
        limited = m.actuator_ctrllimited.astype(bool)
        self.action_low = np.where(limited, m.actuator_ctrlrange[:, 0], -np.inf).astype(np.float64)
        self.action_high = np.where(limited, m.actuator_ctrlrange[:, 1], np.inf).astype(np.float64)
        names = []
        for prefix, sizes, adr in (("qpos", _JOINT_QPOS, m.jnt_qposadr), ("qvel", _JOINT_QVEL, m.jnt_dofadr)):
            per = [""] * (m.nq if prefix == "qpos" else m.nv)
            for j in range(m.njnt):
                jname, n = _name(m, "joint", j, "joint"), sizes[int(m.jnt_type[j])]
                for i in range(n):
                    per[adr[j] + i] = f"{prefix}/{jname}" if n == 1 else f"{prefix}/{jname}[{i}]"
            names += [s or f"{prefix}[{i}]" for i, s in enumerate(per)]
        self.obs_names = tuple(names)
        self._hs = [(j, _name(m, "joint", j, "joint")) for j in range(m.njnt) if int(m.jnt_type[j]) in _HINGE_SLIDE]
        self._qpos_hs = np.array([m.jnt_qposadr[j] for j, _ in self._hs], dtype=int)
        self._reward, self._done = self._compile(reward)
        self.reset()
        for e in (self._reward, self._done):  # fail early, with the text
            if e is None:
                continue
            try:
                value = e.value(**self._namespace())
            except Exception as err:
                raise ValueError(f"{e.what} {e.text!r} fails on the initial state: {type(err).__name__}: {err}") from err
            if e is self._reward and not math.isfinite(value):
                raise ValueError(f"reward expression {e.text!r} is not finite on the initial state")

    @staticmethod
    def _compile(reward) -> tuple[Expression, Expression | None]:
        if isinstance(reward, str):
            reward = {"expression": reward}
        if not isinstance(reward, dict) or not str(reward.get("expression") or "").strip():
            raise ValueError('reward must be {"expression": "<numpy expression>", "done": "<optional>"}, '
                             f"got {reward!r}")
        unknown = sorted(set(reward) - set(_REWARD_KEYS))
        if unknown:
            raise ValueError(f"unknown reward config keys {unknown}; allowed: {list(_REWARD_KEYS)}")
        done = reward.get("done")
        return (Expression(reward["expression"], "reward expression"),
                Expression(done, "reward done") if done is not None and str(done).strip() else None)

    def _namespace(self) -> dict[str, Any]:
        d = self.data
        joint = {name: (float(d.qpos[self.model.jnt_qposadr[j]]), float(d.qvel[self.model.jnt_dofadr[j]]))
                 for j, name in self._hs}
        return {"qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "ctrl": d.ctrl.copy(), "joint": joint,
                "time": float(d.time)}

    def reset(self) -> None:
        import mujoco

        if self.model.nkey > 0:
            mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        else:
            mujoco.mj_resetData(self.model, self.data)
        if self.reset_noise > 0 and len(self._qpos_hs):
            self.data.qpos[self._qpos_hs] += self._rng.uniform(-self.reset_noise, self.reset_noise, len(self._qpos_hs))
        mujoco.mj_forward(self.model, self.data)

    def substep(self, ctrl: np.ndarray) -> tuple[float, bool]:
        import mujoco

        self.data.ctrl[:] = ctrl
        bad = _instability_count(self.data)
        mujoco.mj_step(self.model, self.data)
        if _instability_count(self.data) > bad:  # mujoco reset the state (or zeroed the control) itself
            raise PhysicsDiverged(f"MuJoCo found the simulation unstable at t = {self.data.time:.3f} s and reset "
                                  f"its state or zeroed its control")
        ns = self._namespace()
        reward = self._reward.value(**ns)
        done = bool(self._done.value(**ns)) if self._done is not None else False
        return reward, done

    def observation(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def render(self, width: int, height: int, camera) -> np.ndarray:
        import mujoco

        if getattr(self, "_renderer", None) is None or self._renderer_size != (width, height):
            self.close()
            self._renderer, self._renderer_size = mujoco.Renderer(self.model, height, width), (width, height)
        cam = camera if camera is not None else (0 if self.model.ncam > 0 else -1)
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render()

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None


class SimEngine:
    """Steps a MuJoCo simulation with commands in physical units. See the module docstring."""

    def __init__(self, backend, action_repeat: int = 2, episode_steps: int | None = None):
        if int(action_repeat) < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self._b = backend
        self.name: str = backend.name
        self.action_repeat = int(action_repeat)
        if episode_steps is None:  # dm_control: the task's time limit, in control steps
            episode_steps = math.ceil(backend.step_limit / self.action_repeat)
        elif int(episode_steps) < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        self.episode_steps = int(episode_steps)
        self._end_by_count = not isinstance(backend, _DMCBackend)  # dm_control ends by its own time limit
        m = backend.model
        self._joints = [j for j in range(m.njnt) if int(m.jnt_type[j]) in _HINGE_SLIDE]
        self.joint_names: tuple[str, ...] = tuple(_name(m, "joint", j, "joint") for j in self._joints)
        self.skipped_joints: tuple[str, ...] = tuple(
            _name(m, "joint", j, "joint") for j in range(m.njnt) if j not in self._joints)
        self._qpos_adr = np.array([m.jnt_qposadr[j] for j in self._joints], dtype=int)
        self._dof_adr = np.array([m.jnt_dofadr[j] for j in self._joints], dtype=int)
        self.actuator_names: tuple[str, ...] = tuple(_name(m, "actuator", i, "actuator") for i in range(m.nu))
        self.action_low: np.ndarray = backend.action_low
        self.action_high: np.ndarray = backend.action_high
        self.action_dim = int(m.nu)
        if len(self.action_low) != self.action_dim:
            raise ValueError(f"action bounds have {len(self.action_low)} entries for {self.action_dim} actuators")
        # Every actuator drives one hinge/slide joint directly: joint efforts are meaningful per joint.
        self.actuators_map_to_joints = m.nu > 0 and all(
            int(m.actuator_trntype[i]) == _TRN_JOINT and int(m.actuator_trnid[i, 0]) in self._joints
            for i in range(m.nu))
        # The joint each actuator drives, by name (commands that name joints: JointState, JointTrajectory).
        self.actuator_joints: tuple[str, ...] | None = (tuple(
            _name(m, "joint", int(m.actuator_trnid[i, 0]), "joint") for i in range(m.nu))
            if self.actuators_map_to_joints else None)
        self.obs_names: tuple[str, ...] = backend.obs_names
        self.obs_dim = len(self.obs_names)
        self.physics_dt: float = backend.physics_dt
        self.control_dt: float = self.physics_dt * self.action_repeat
        self.episode = -1  # index of the current episode; 0 after the first reset()
        self.step_in_episode = 0
        self.last_command = self.zero_command()
        self.last_step_commands = 0  # different commands the last finished control step applied
        self.diverged = 0  # episodes ended by PhysicsDiverged
        self._physics_steps = 0
        self._begin_control_step()
        self._needs_reset = True

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_task(cls, task: str = "cartpole-swingup", seed: int = 0, action_repeat: int = 2) -> "SimEngine":
        """A dm_control suite task, e.g. ``cartpole-swingup`` or ``cup-catch``."""
        return cls(_DMCBackend(task, int(seed)), action_repeat)

    @classmethod
    def from_mjcf(cls, path, reward: dict | str, episode_steps: int = 500, action_repeat: int = 2,
                  seed: int = 0, reset_noise: float = 0.0) -> "SimEngine":
        """A user's MJCF file; ``reward`` as in the module docstring. ``reset_noise`` adds
        U(-reset_noise, reset_noise) (drawn from ``seed``) to hinge/slide positions at each reset."""
        return cls(_MJCFBackend(path, reward, int(seed), reset_noise), action_repeat, episode_steps)

    # --- state --------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Simulated seconds since the engine was built (monotonic across episodes)."""
        return self._physics_steps * self.physics_dt

    @property
    def done(self) -> bool:
        """True before the first reset() and after an episode ended (step() then needs reset())."""
        return self._needs_reset

    def joint_positions(self) -> np.ndarray:
        return self._b.data.qpos[self._qpos_adr].astype(np.float64)

    def joint_velocities(self) -> np.ndarray:
        return self._b.data.qvel[self._dof_adr].astype(np.float64)

    def joint_efforts(self) -> np.ndarray:
        """Generalised actuator force at each hinge/slide joint (N·m or N) during the last physics step."""
        return self._b.data.qfrc_actuator[self._dof_adr].astype(np.float64)

    def observation(self) -> np.ndarray:
        return np.array(self._b.observation(), dtype=np.float64)

    # --- commands -----------------------------------------------------------------------------
    def validate_command(self, values) -> tuple[bool, str]:
        """(ok, reason): a command must be action_dim finite numbers, one per actuator."""
        try:
            a = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return False, f"command is not numeric; expected {self._expected()}"
        if a.ndim != 1 or a.shape[0] != self.action_dim:
            got = f"{a.shape[0]} values" if a.ndim == 1 else f"shape {a.shape}"
            return False, f"command has {got}; expected {self._expected()}"
        if not np.all(np.isfinite(a)):
            bad = [self.actuator_names[i] for i in np.flatnonzero(~np.isfinite(a))]
            return False, f"command has NaN/Inf for {bad}; expected {self._expected()}"
        return True, ""

    def effort_per_control(self) -> np.ndarray:
        """The force (N) or torque (N·m) at its joint per unit of each actuator's control: gear x gain.
        Defined where every actuator is a plain motor on one hinge/slide joint (fixed gain, no bias,
        no activation dynamics), as dm_control's tasks have them; raises ValueError naming an actuator
        that is not."""
        m = self._b.model
        if not self.actuators_map_to_joints:
            raise ValueError(f"actuators {list(self.actuator_names)} do not each drive one hinge/slide joint")
        plain = (m.actuator_gaintype == 0) & (m.actuator_biastype == 0) & (m.actuator_dyntype == 0)
        if not plain.all():
            others = [self.actuator_names[i] for i in np.flatnonzero(~plain)]
            raise ValueError(f"actuators {others} are not plain motors (a servo, a bias or activation dynamics), so "
                             "their control is no fixed multiple of the joint's force")
        return (m.actuator_gear[:, 0] * m.actuator_gainprm[:, 0]).astype(np.float64)

    def _expected(self) -> str:
        return f"{self.action_dim} finite values for actuators {list(self.actuator_names)}"

    def zero_command(self) -> np.ndarray:
        """Zero for every actuator, clipped into its bounds: the command before any, and a watchdog's."""
        return np.clip(np.zeros(self.action_dim), self.action_low, self.action_high)

    def clip_command(self, values) -> tuple[np.ndarray, bool]:
        """(command clipped to [action_low, action_high], whether anything was clipped)."""
        a = np.asarray(values, dtype=np.float64)
        c = np.clip(a, self.action_low, self.action_high)
        return c, bool(np.any(c != a))

    # --- episode ------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        self._b.reset()
        self._begin_control_step()
        self.episode += 1
        self.step_in_episode = 0
        self._needs_reset = False
        self.last_command = self.zero_command()
        self.last_step_commands = 0
        return self.observation()

    def step(self, command) -> tuple[np.ndarray, float, bool]:
        """Apply a PHYSICAL command (clipped to the bounds) for action_repeat physics steps.

        Returns (observation, reward summed over the repeats, episode over). After the episode is
        over, call reset() before stepping again.
        """
        while not self.physics_step(command):
            pass
        return self.finish_step()

    def physics_step(self, command) -> bool:
        """One physics step of the running control step, with a PHYSICAL command (clipped), for a
        driver that applies each new command at the next physics step (a controller manager running at
        the physics rate). True when the control step is complete: action_repeat physics steps, or the
        episode ended. Then finish_step() gives its observation and reward; last_command is the command
        of its last physics step."""
        if self._needs_reset:
            raise RuntimeError("the episode is over (or never started): call reset() before step()")
        ok, reason = self.validate_command(command)
        if not ok:
            raise ValueError(reason)
        ctrl, _ = self.clip_command(command)
        if self._step_substeps == 0 or not np.array_equal(ctrl, self.last_command):
            self._step_commands += 1
        self.last_command = ctrl
        try:
            reward, done = self._b.substep(ctrl)
            if not np.all(np.isfinite(self._b.data.qpos)) or not np.all(np.isfinite(self._b.data.qvel)):
                raise PhysicsDiverged("NaN or Inf in the state")
        except PhysicsDiverged as e:
            self._needs_reset = True
            self.diverged += 1
            raise PhysicsDiverged(f"{self.name}: the simulation diverged in episode {self.episode}, step "
                                  f"{self.step_in_episode} (command {ctrl.tolist()}): {e}") from None
        self._physics_steps += 1
        self._step_reward += reward
        self._step_substeps += 1
        self._step_done = bool(done)
        return self._step_complete()

    def _begin_control_step(self) -> None:
        """The running control step's reward so far, its physics steps, the different commands they
        applied, and whether the episode ended in it."""
        self._step_reward, self._step_substeps, self._step_commands, self._step_done = 0.0, 0, 0, False

    def _step_complete(self) -> bool:
        return self._step_done or self._step_substeps >= self.action_repeat

    def finish_step(self) -> tuple[np.ndarray, float, bool]:
        """(observation, reward summed over its physics steps, episode over) of a complete control step."""
        if not self._step_complete():
            raise RuntimeError(f"the control step has {self._step_substeps} of {self.action_repeat} physics steps")
        total, done = self._step_reward, self._step_done
        self.last_step_commands = self._step_commands
        self._begin_control_step()
        self.step_in_episode += 1
        if self._end_by_count and self.step_in_episode >= self.episode_steps:
            done = True
        self._needs_reset = done
        return self.observation(), total, done

    def render(self, width: int = 320, height: int = 240, camera: int | None = None) -> np.ndarray:
        """An RGB uint8 (height, width, 3) image, offscreen (set MUJOCO_GL=egl on headless machines)."""
        return self._b.render(int(width), int(height), camera)

    def close(self) -> None:
        self._b.close()

    def __repr__(self) -> str:
        return (f"SimEngine({self.name!r}, actuators={list(self.actuator_names)}, joints={list(self.joint_names)}, "
                f"obs_dim={self.obs_dim}, control_dt={self.control_dt:g})")


def describe(engine: SimEngine) -> Sequence[str]:
    """Human-readable lines about an engine (for logs)."""
    return [repr(engine), "observation: " + ", ".join(engine.obs_names),
            "action bounds: " + ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, lo, hi in
                                          zip(engine.actuator_names, engine.action_low, engine.action_high))]
