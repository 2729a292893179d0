"""SimEngine: the ROS-free MuJoCo simulation behind sim_node (dm_control tasks and user MJCF files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from tdmpc2_ros.envs.dmc import DMControlEnv
from tdmpc2_ros.sim.engine import SimEngine

ROOT = Path(__file__).resolve().parents[1]
PENDULUM = str(ROOT / "test" / "assets" / "pendulum.xml")


@pytest.fixture
def cartpole():
    engine = SimEngine.from_task("cartpole-swingup", seed=0, action_repeat=2)
    yield engine
    engine.close()


def test_cartpole_shapes_names_and_bounds(cartpole):
    env = DMControlEnv("cartpole-swingup", seed=0, action_repeat=2)
    assert cartpole.obs_names == env.obs_names
    assert cartpole.obs_dim == env.obs_dim == 5
    assert "slider" in cartpole.joint_names and "hinge_1" in cartpole.joint_names
    assert cartpole.skipped_joints == ()
    assert cartpole.actuator_names == ("slide",)
    np.testing.assert_array_equal(cartpole.action_low, env.action_low)
    np.testing.assert_array_equal(cartpole.action_high, env.action_high)
    assert cartpole.physics_dt == pytest.approx(0.01) and cartpole.control_dt == pytest.approx(0.02)
    assert cartpole.episode_steps == 500 and cartpole.episode == -1 and cartpole.done

    obs = cartpole.reset()
    assert obs.dtype == np.float64 and obs.shape == (5,)
    assert cartpole.episode == 0 and cartpole.step_in_episode == 0 and not cartpole.done
    # Same seed, same initial state as the training environment (which flattens to float32).
    np.testing.assert_allclose(obs, env.reset(), rtol=0, atol=1e-6)
    assert cartpole.joint_positions().shape == cartpole.joint_velocities().shape == (2,)


def test_constant_command_changes_state_rewards_in_range(cartpole):
    cartpole.reset()
    q0, obs0 = cartpole.joint_positions(), cartpole.observation()
    rewards = []
    for _ in range(20):
        obs, reward, done = cartpole.step([1.0])
        rewards.append(reward)
        assert not done
    assert cartpole.joint_positions()[0] > q0[0] + 0.01  # full force to +x moves the cart to +x
    assert not np.allclose(obs, obs0)
    assert all(0.0 <= r <= 2.0 for r in rewards)  # two repeats of a [0, 1] reward
    assert cartpole.step_in_episode == 20 and cartpole.time == pytest.approx(20 * 0.02)
    # cartpole's motor (gear 10) drives the slider: effort is the joint force, zero on the hinge.
    assert cartpole.actuators_map_to_joints
    np.testing.assert_allclose(cartpole.joint_efforts(), [10.0, 0.0])


def test_episode_ends_after_500_control_steps(cartpole):
    cartpole.reset()
    for i in range(1, 501):
        _, _, done = cartpole.step([0.0])
        assert done == (i == 500), i
    assert cartpole.done
    with pytest.raises(RuntimeError, match="reset"):
        cartpole.step([0.0])
    cartpole.reset()
    assert cartpole.episode == 1 and cartpole.step_in_episode == 0
    assert cartpole.time == pytest.approx(500 * 0.02)  # sim time keeps increasing across episodes


def test_seed_determinism():
    commands = np.random.default_rng(1).uniform(-1, 1, size=(40, 1))

    def rollout(seed):
        engine = SimEngine.from_task("cartpole-swingup", seed=seed)
        out = [engine.reset()]
        out += [engine.step(c)[0] for c in commands]
        out.append(engine.reset())  # the second episode's initial state comes from the seed too
        return np.stack(out)

    a, b = rollout(3), rollout(3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], rollout(4)[0])


def test_physics_steps_make_the_control_step_and_a_new_command_acts_from_the_next_one():
    """A driver at the physics rate (sim_node's joint_states_rate: physics) steps one physics step at
    a time: action_repeat of them with one command are exactly step(); a command that changes between
    them acts from the next physics step, and the control step reports the last one, and that it
    applied two commands."""
    commands = np.random.default_rng(2).uniform(-1, 1, size=(30, 1))
    whole, split, changed = (SimEngine.from_task("cartpole-swingup", seed=5) for _ in range(3))
    for engine in (whole, split, changed):
        engine.reset()
    for c in commands:
        obs, reward, done = whole.step(c)
        assert not split.physics_step(c) and split.physics_step(c)  # the second completes it
        assert (obs.tolist(), reward, done) == tuple(x.tolist() if isinstance(x, np.ndarray) else x
                                                    for x in split.finish_step())
        assert whole.last_step_commands == split.last_step_commands == 1
    assert split.time == whole.time and split.step_in_episode == whole.step_in_episode == 30
    with pytest.raises(RuntimeError, match="has 1 of 2 physics steps"):
        split.physics_step(commands[0])
        split.finish_step()
    changed.physics_step([1.0])
    changed.physics_step([-1.0])  # arrived mid-step
    obs, _, _ = changed.finish_step()
    reference = SimEngine.from_task("cartpole-swingup", seed=5)
    reference.reset()
    assert not np.allclose(obs, reference.step([1.0])[0]) and changed.last_command.tolist() == [-1.0]
    assert changed.last_step_commands == 2 and reference.last_step_commands == 1
    changed.reset()
    assert changed.last_step_commands == 0  # no step yet in this episode
    for engine in (whole, split, changed, reference):
        engine.close()


def test_out_of_range_commands_are_clipped(cartpole):
    other = SimEngine.from_task("cartpole-swingup", seed=0)
    cartpole.reset(), other.reset()
    clipped, was = cartpole.clip_command([5.0])
    assert was and clipped.tolist() == [1.0]
    assert cartpole.clip_command([0.5]) == (pytest.approx(np.array([0.5])), False)
    for _ in range(5):
        a, ra, _ = cartpole.step([5.0])
        b, rb, _ = other.step([1.0])
        np.testing.assert_array_equal(a, b)
        assert ra == rb
    assert cartpole.last_command.tolist() == [1.0]
    cartpole.step([-7.0])
    assert cartpole.last_command.tolist() == [-1.0]


def test_effort_per_control_is_gear_times_gain(cartpole, tmp_path):
    """What sim_node's command_units: effort divides by: a motor's force per unit of control."""
    assert cartpole.effort_per_control().tolist() == [10.0]  # dm_control cartpole: gear 10
    pendulum = SimEngine.from_mjcf(PENDULUM, "cos(qpos[0])")
    assert pendulum.effort_per_control().tolist() == [1.0]
    # The joint of each actuator, by name: what sim_node's joint_state / joint_trajectory commands name.
    assert cartpole.actuator_joints == ("slider",) and pendulum.actuator_joints == ("hinge",)
    servo = tmp_path / "servo.xml"
    servo.write_text(Path(PENDULUM).read_text().replace('<motor name="torque" joint="hinge" gear="1"',
                                                                   '<position name="servo" joint="hinge" kp="10"'))
    with pytest.raises(ValueError, match=r"actuators \['servo'\] are not plain motors"):
        SimEngine.from_mjcf(servo, "cos(qpos[0])").effort_per_control()


def test_validate_command(cartpole):
    assert cartpole.validate_command([0.3]) == (True, "")
    for bad in ([], [0.1, 0.2], [float("nan")], [float("inf")], "abc", [[0.1]]):
        ok, reason = cartpole.validate_command(bad)
        assert not ok, bad
        assert "1 finite values" in reason and "slide" in reason, reason
    assert "2 values" in cartpole.validate_command([0.1, 0.2])[1]
    cartpole.reset()
    with pytest.raises(ValueError, match="slide"):
        cartpole.step([float("nan")])
    assert cartpole.step_in_episode == 0  # nothing was applied


def test_mjcf_pendulum_reward_and_episode():
    engine = SimEngine.from_mjcf(PENDULUM, {"expression": "cos(qpos[0])"}, episode_steps=10, action_repeat=2)
    assert engine.joint_names == ("hinge",) and engine.actuator_names == ("torque",)
    assert engine.obs_names == ("qpos/hinge", "qvel/hinge")
    assert engine.action_low.tolist() == [-2.0] and engine.action_high.tolist() == [2.0]
    assert engine.physics_dt == pytest.approx(0.01) and engine.control_dt == pytest.approx(0.02)
    np.testing.assert_array_equal(engine.reset(), [0.0, 0.0])

    # The same physics by hand: reward = sum over the 2 repeats of cos(hinge angle) after each step.
    model = mujoco.MjModel.from_xml_path(PENDULUM)
    data = mujoco.MjData(model)
    for i in range(10):
        obs, reward, done = engine.step([3.0])  # clipped to 2.0
        expected = 0.0
        for _ in range(2):
            data.ctrl[:] = 2.0
            mujoco.mj_step(model, data)
            expected += np.cos(data.qpos[0])
        assert reward == pytest.approx(expected, abs=1e-12)
        np.testing.assert_allclose(obs, [data.qpos[0], data.qvel[0]], atol=1e-12)
        assert done == (i == 9)
    assert engine.joint_positions()[0] > 0.1  # the torque swung it up a bit
    assert engine.joint_efforts().tolist() == [2.0]  # motor with gear 1: joint torque = command
    img = engine.render(64, 48)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.std() > 0
    engine.close()


def test_mjcf_reward_config_namespace_and_errors():
    engine = SimEngine.from_mjcf(
        PENDULUM, {"expression": "joint['hinge'][0] + 0 * ctrl[0] + 0 * time", "done": "abs(qpos[0]) > 0.05"},
        episode_steps=1000, action_repeat=1)
    engine.reset()
    steps = 0
    while True:
        _, reward, done = engine.step([2.0])
        steps += 1
        assert reward == pytest.approx(engine.joint_positions()[0])
        if done:
            break
        assert steps < 1000
    assert abs(engine.joint_positions()[0]) > 0.05 and steps < 1000  # the done expression ended it early

    assert SimEngine.from_mjcf(PENDULUM, "-square(qvel[0])").reset().shape == (2,)  # string shorthand
    with pytest.raises(ValueError, match="unknown reward config keys"):
        SimEngine.from_mjcf(PENDULUM, {"expression": "1.0", "shaping": "2"})
    with pytest.raises(ValueError, match="not_a_name"):
        SimEngine.from_mjcf(PENDULUM, {"expression": "not_a_name * 2"})
    with pytest.raises(ValueError, match="open"):  # no builtins in the namespace
        SimEngine.from_mjcf(PENDULUM, {"expression": "len(open('/etc/passwd').read())"})
    with pytest.raises(ValueError, match="expression"):
        SimEngine.from_mjcf(PENDULUM, {"expression": "cos(qpos[0]"})
    with pytest.raises(ValueError, match="expression"):
        SimEngine.from_mjcf(PENDULUM, {})


def test_missing_mjcf_path_names_the_path(tmp_path):
    missing = str(tmp_path / "no_such_robot.xml")
    with pytest.raises(FileNotFoundError, match="no_such_robot.xml"):
        SimEngine.from_mjcf(missing, {"expression": "0.0"})


def test_unknown_task():
    with pytest.raises(ValueError, match="cartpole-flyaway"):
        SimEngine.from_task("cartpole-flyaway")


def test_sim_modules_do_not_import_torch():
    code = ("import sys, tdmpc2_ros.sim.engine, tdmpc2_ros.ros.sim_node\n"
            "from tdmpc2_ros.sim import SimEngine\n"
            "SimEngine.from_task('cartpole-swingup').reset()\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL="egl")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_diverging_simulation_raises_and_needs_a_reset(tmp_path, cartpole):
    """MuJoCo resets a state it finds bad inside the step (an MJCF model), dm_control raises its
    PhysicsError: either way the step raises PhysicsDiverged, naming the command, and the episode is
    over; a reset starts a sound one."""
    from tdmpc2_ros.sim.engine import PhysicsDiverged

    wild = tmp_path / "wild.xml"  # the test pendulum with its motor unlimited
    wild.write_text(Path(PENDULUM).read_text().replace(' ctrlrange="-2 2"', ""))
    engine = SimEngine.from_mjcf(str(wild), "cos(qpos[0])", episode_steps=50)
    assert np.isinf(engine.action_high).all()
    engine.reset()
    engine.step([0.5])
    with pytest.raises(PhysicsDiverged, match=r"diverged in episode 0, step 1 \(command \[1000000000.0\]\)"):
        engine.step([1e9])
    assert engine.done and engine.diverged == 1
    with pytest.raises(RuntimeError, match="call reset"):
        engine.step([0.5])
    engine.reset()
    obs, reward, done = engine.step([0.5])
    assert np.isfinite(obs).all() and np.isfinite(reward) and not done

    cartpole.reset()
    cartpole._b.env.physics.data.qvel[:] = np.nan  # what a diverged integration leaves
    with pytest.raises(PhysicsDiverged, match="Physics state is invalid"):
        cartpole.step([0.0])
    assert cartpole.done and cartpole.diverged == 1
    assert np.isfinite(cartpole.reset()).all() and np.isfinite(cartpole.step([0.1])[0]).all()
