"""The bag-fed learner (training/offline.py) without ROS: what a bag holds is exactly what the buffer
gets; a bad bag is skipped with its file and reason named and the buffer unchanged; no update before
min_transitions; an export is validated (spec, finite, ONNX-torch parity, latency) before it enters
the store and a NaN model never does; a restart resumes counters and never ingests a bag twice; and
`tdmpc2-ros train --bags` end to end.

Everything is small: obs dim 5, action dim 1, batch 32, a one-rung ladder (2 x 64 samples), one
thread (the machine may be shared).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from core_helpers import make_model
from tdmpc2_ros.bags import BagWriter, IngestLedger, episodes_from_raw
from tdmpc2_ros.bags.cdr import FLOAT64, FLOAT64_MULTI_ARRAY, INT64, encode_float64, encode_float64_multiarray, encode_int64
from tdmpc2_ros.runtime import OnnxPlanner, PlanBudget
from tdmpc2_ros.runtime.ladder import read_ladder
from tdmpc2_ros.runtime import model_store
from tdmpc2_ros.runtime.model_store import ModelStore
from tdmpc2_ros.runtime.transition import Transition
from tdmpc2_ros.runtime.digest import file_sha256
from tdmpc2_ros.training.offline import LEDGER, OfflineTrainer, RawTopics, parse_rung

OBS, ACT = 5, 1
T0 = 1_700_000_000_000_000_000  # ns
DT = 20_000_000  # 50 Hz
RUNG = PlanBudget(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8)


class ListLog:
    """Collects what the trainer logs: (level, message)."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, msg):
        self.lines.append(("info", msg))

    def warning(self, msg):
        self.lines.append(("warning", msg))

    def error(self, msg):
        self.lines.append(("error", msg))

    def text(self, level=None) -> str:
        return "\n".join(m for lv, m in self.lines if level is None or lv == level)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def episode(rng, eid: int, steps: int, first_step: int = 0, total: int | None = None) -> list[Transition]:
    """Transitions first_step .. first_step + steps - 1 of an episode of `total` steps (truncated at its end)."""
    total = first_step + steps if total is None else total
    obs = rng.normal(size=(steps + 1, OBS))
    return [Transition(eid, first_step + k, obs[k], rng.uniform(-1, 1, ACT), float(rng.normal()), obs[k + 1],
                       truncated=first_step + k == total - 1) for k in range(steps)]


def write_bags(directory, chunks: list[list[Transition]], start: int = T0) -> list:
    """One closed bag per chunk, in order."""
    w = BagWriter(directory)
    t = start
    for chunk in chunks:
        for tr in chunk:
            w.write_transition(tr, t)
            t += DT
        w.close()
    return list(w.closed)


def make_trainer(run_dir, **overrides) -> OfflineTrainer:
    args = dict(batch_size=32, threads=1, budgets=[RUNG], min_transitions=50, control_rate_hz=5.0, latency_warmup=2,
                latency_runs=10, task="cartpole-swingup", buffer_size=10_000, log=ListLog())
    args.update(overrides)
    return OfflineTrainer(run_dir, OBS, ACT, **args)


def buffer_state(trainer: OfflineTrainer) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in trainer.buffer.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def fragment_rows(fragment: list[Transition]):
    """What ReplayBuffer rows an episode fragment becomes: obs [T+1], action/reward with a NaN row 0."""
    obs = np.stack([t.obs for t in fragment] + [fragment[-1].next_obs]).astype(np.float32)
    action = np.concatenate([np.full((1, ACT), np.nan), np.stack([t.action for t in fragment])]).astype(np.float32)
    reward = np.concatenate([[np.nan], [t.reward for t in fragment]]).astype(np.float32)
    return obs, action, reward


def test_ingest_holds_exactly_the_recorded_transitions(tmp_path):
    rng = np.random.default_rng(0)
    ep0, ep1, ep2 = episode(rng, 0, 30), episode(rng, 1, 20), episode(rng, 2, 25)
    ep3 = episode(rng, 3, 25)  # recorded across two bags
    ep3a, ep3b = ep3[:10], ep3[10:]
    bags = write_bags(tmp_path / "bags", [ep0 + ep1, ep2 + ep3a, ep3b])
    trainer = make_trainer(tmp_path / "run", action_repeat=2)
    results = trainer.ingest_pending(tmp_path / "bags")
    assert [(r["bag"], r["status"], r["transitions"]) for r in results] == \
        [(bags[0].name, "ingested", 50), (bags[1].name, "ingested", 35), (bags[2].name, "ingested", 15)]

    # The buffer holds those 100 transitions, row for row, as 5 fragments (ep3 split by the bag boundary).
    buf = trainer.buffer
    assert len(buf) == 100 and buf.num_episodes == 5 and buf.size == 105
    want = [fragment_rows(f) for f in (ep0, ep1, ep2, ep3a, ep3b)]
    np.testing.assert_array_equal(buf.obs[: buf.size], np.concatenate([w[0] for w in want]))
    np.testing.assert_array_equal(buf.action[: buf.size], np.concatenate([w[1] for w in want]))
    np.testing.assert_array_equal(buf.reward[: buf.size], np.concatenate([w[2] for w in want]))
    assert not buf.terminated[: buf.size].any()
    assert (trainer.transitions, trainer.episodes, trainer.env_steps) == (100, 5, 200)

    # Ledger: each bag once, with its counts; nothing is pending any more.
    ledger = IngestLedger(tmp_path / "run" / LEDGER)
    assert {e["bag"]: (e["status"], e["transitions"]) for e in ledger.entries.values()} == \
        {bags[0].name: ("ingested", 50), bags[1].name: ("ingested", 35), bags[2].name: ("ingested", 15)}
    assert trainer.ingest_pending(tmp_path / "bags") == [] and trainer.pending(tmp_path / "bags") == []

    # Learning curve: one row per complete episode (ep3's two halves joined), return = sum of rewards,
    # env steps so far (action repeat 2).
    rows = trainer.curve_log.read()
    returns = [sum(t.reward for t in e) for e in (ep0, ep1, ep2, ep3)]
    assert [float(r["episode_reward"]) for r in rows] == pytest.approx(returns, abs=1e-3)
    assert [int(r["length"]) for r in rows] == [30, 20, 25, 25]
    assert [int(r["step"]) for r in rows] == [60, 100, 150, 200]
    assert [r["bag"] for r in rows] == [bags[0].name, bags[0].name, bags[1].name, bags[2].name]
    trainer.plot()
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000


def test_no_update_before_min_transitions(tmp_path):
    rng = np.random.default_rng(1)
    write_bags(tmp_path / "bags", [episode(rng, 0, 40)])
    trainer = make_trainer(tmp_path / "run", min_transitions=100)
    trainer.ingest_pending(tmp_path / "bags")
    info = trainer.train(5)
    assert info["updates"] == 0 and "min_transitions=100" in info["reason"]
    assert trainer.updates == 0 and trainer.agent.updates == 0 and not trainer.can_train()
    write_bags(tmp_path / "bags", [episode(rng, 1, 60)], start=T0 + 10**12)
    trainer.ingest_pending(tmp_path / "bags")
    info = trainer.train(3)
    assert info["updates"] == 3 and trainer.agent.updates == 3 and np.isfinite(info["total_loss"])


def write_raw_bag(directory, rng, rewards: bool = True, steps: int = 20) -> tuple:
    """obs (labelled 'obs') / commands in [-2, 2] / rewards / episode topics, as sim + controller publish them."""
    w = BagWriter(directory)
    for topic, msgtype in (("/obs", FLOAT64_MULTI_ARRAY), ("/cmd", FLOAT64_MULTI_ARRAY), ("/reward", FLOAT64),
                           ("/episode", INT64)):
        w.add_topic(topic, msgtype)
    t = T0
    w.write("/episode", INT64, encode_int64(0), t - 100_000)
    for k in range(steps):
        w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([("obs", OBS)], rng.normal(size=OBS)), t)
        w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], rng.uniform(-2, 2, ACT)), t + 3_000_000)
        if rewards:
            w.write("/reward", FLOAT64, encode_float64(float(rng.normal())), t + DT - 200_000)
        t += DT
    return w.close()


def test_bad_bags_are_skipped_named_and_change_nothing(tmp_path):
    rng = np.random.default_rng(2)
    good = write_bags(tmp_path / "good", [episode(rng, 0, 40)])[0]
    trainer = make_trainer(tmp_path / "run")
    trainer.ingest_pending(tmp_path / "good")
    before, counters = buffer_state(trainer), trainer.summary()
    assert counters["transitions"] == 40

    bad = tmp_path / "bad"
    # 1. truncated: half of the storage file is gone
    truncated = write_bags(bad, [episode(rng, 1, 300)])[0]
    data_file = next(p for p in truncated.iterdir() if p.suffix == ".mcap")
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    # 2. unknown topics only
    w = BagWriter(bad)
    for i in range(10):
        w.write("/some/other_topic", FLOAT64, encode_float64(float(i)), T0 + 10**11 + i * DT)
    unknown = w.close()
    # 3. records of another robot (obs dim 4)
    other = [Transition(5, k, rng.normal(size=4), rng.uniform(-1, 1, ACT), 0.5, rng.normal(size=4)) for k in range(10)]
    w = BagWriter(bad)
    for i, t in enumerate(other):
        w.write_transition(t, T0 + 2 * 10**11 + i * DT)
    wrong_dim = w.close()
    # 4. records whose rewards are NaN
    nan_reward = [Transition(6, k, rng.normal(size=OBS), rng.uniform(-1, 1, ACT), float("nan"), rng.normal(size=OBS))
                  for k in range(10)]
    w = BagWriter(bad)
    for i, t in enumerate(nan_reward):
        w.write_transition(t, T0 + 3 * 10**11 + i * DT)
    nan_bag = w.close()

    results = {r["bag"]: r for r in trainer.ingest_pending(bad)}
    expected = {truncated.name: "unreadable", unknown.name: "no transition-record topic",
                wrong_dim.name: "obs dim 4", nan_bag.name: "no episode with finite"}
    assert set(results) == set(expected)
    ledger = IngestLedger(tmp_path / "run" / LEDGER)
    warnings = [m for lv, m in trainer.log.lines if lv == "warning" and m.startswith("skipped bag")]
    for bag in (truncated, unknown, wrong_dim, nan_bag):
        r = results[bag.name]
        assert r["status"] == "skipped" and expected[bag.name] in r["reason"], r
        lines = [m for m in warnings if str(bag) in m]
        assert len(lines) == 1 and r["reason"] in lines[0] and "\n" not in lines[0]  # one line: file and reason
        entry = ledger.entry(bag)
        assert entry["status"] == "skipped" and entry["reason"] == r["reason"]
    assert_same_state(before, buffer_state(trainer))
    assert trainer.summary() | {"bags_skipped": 0} == counters | {"bags_skipped": 0}
    assert trainer.summary()["bags_skipped"] == 4
    assert trainer.ingest_pending(bad) == []  # a skipped bag is not retried
    assert trainer.bags == [{"bag": good.name, "identity": trainer.bags[0]["identity"], "transitions": 40, "episodes": 1}]

    # Raw-topic mode: a good bag is aligned and ingested; one without rewards is skipped and changes nothing.
    raw_trainer = make_trainer(tmp_path / "raw_run", raw=RawTopics("/obs", "/cmd", "/reward", "/episode"),
                               action_low=[-2.0], action_high=[2.0])
    raw_good = write_raw_bag(tmp_path / "raw", rng)
    expected_n = episodes_from_raw(raw_good, "/obs", "/cmd", "/reward", "/episode", action_low=[-2.0],
                                   action_high=[2.0]).transitions
    assert expected_n == 19
    raw_trainer.ingest_pending(tmp_path / "raw")
    assert len(raw_trainer.buffer) == 19
    before = buffer_state(raw_trainer)
    no_rewards = write_raw_bag(tmp_path / "raw", rng, rewards=False)
    (result,) = raw_trainer.ingest_pending(tmp_path / "raw")
    assert result["bag"] == no_rewards.name and result["status"] == "skipped"
    assert "no rewards" in result["reason"] and str(no_rewards) in raw_trainer.log.text("warning")
    assert_same_state(before, buffer_state(raw_trainer))


def write_robot_bag(directory, rng, episodes, steps: int = 20, ended: bool = True) -> tuple:
    """Raw topics as a robot with reward_node publishes them: each reward just after the observation
    it scores, and each episode's return when the next episode is announced (after the episode's last
    observation; the last one at the end). -> (bag, returns)."""
    w = BagWriter(directory)
    for topic, msgtype in (("/obs", FLOAT64_MULTI_ARRAY), ("/cmd", FLOAT64_MULTI_ARRAY), ("/reward", FLOAT64),
                           ("/episode", INT64), ("/return", FLOAT64)):
        w.add_topic(topic, msgtype)
    t, returns = T0, []
    for e in episodes:
        w.write("/episode", INT64, encode_int64(e), t - 100_000)
        total = 0.0
        for k in range(steps):
            w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([("obs", OBS)], rng.normal(size=OBS)), t)
            if k:  # the reward of the step that led here
                r = float(rng.normal())
                total += r
                w.write("/reward", FLOAT64, encode_float64(r), t + 2_000_000)
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], rng.uniform(-2, 2, ACT)), t + 3_000_000)
            t += DT
        if ended:  # else the last episode goes on in the next bag
            w.write("/return", FLOAT64, encode_float64(total), t - DT + 4_000_000)
            returns.append(total)
        t += DT  # the reset
    return w.close(), returns


def test_raw_topics_with_the_robots_episode_returns_give_one_curve_row_per_episode(tmp_path):
    """RawTopics.episode_return_topic: train.csv holds the robot's own episode returns (reward_node's),
    placed after the episode's transitions, with the transitions since the previous return as length,
    across bags and a restart; without the topic, each fragment is a row."""
    rng = np.random.default_rng(5)
    raw = RawTopics("/obs", "/cmd", "/reward", "/episode", reward_tolerance_s=0.005, episode_return_topic="/return")
    b1, returns1 = write_robot_bag(tmp_path / "bags", rng, [0, 1])
    trainer = make_trainer(tmp_path / "run", raw=raw, action_low=[-2.0], action_high=[2.0], action_repeat=2)
    trainer.ingest_pending(tmp_path / "bags")
    assert trainer.transitions == 38  # 19 per episode
    rows = [(float(r["episode_reward"]), int(r["length"]), int(r["step"])) for r in trainer.curve_log.read()]
    assert rows == [(pytest.approx(returns1[0], abs=1e-4), 19, 38), (pytest.approx(returns1[1], abs=1e-4), 19, 76)]
    trainer.save()
    resumed = make_trainer(tmp_path / "run", raw=raw, action_low=[-2.0], action_high=[2.0], action_repeat=2)
    b2, returns2 = write_robot_bag(tmp_path / "bags", rng, [2])
    resumed.ingest_pending(tmp_path / "bags")
    rows = [(int(r["length"]), int(r["step"])) for r in resumed.curve_log.read()]
    assert rows == [(19, 38), (19, 76), (19, 114)] and resumed.transitions == 57
    # A bag in which no episode ended (a robot's long episode) adds no row, and the next return's
    # length counts its transitions too.
    write_robot_bag(tmp_path / "bags", rng, [3], ended=False)
    resumed.ingest_pending(tmp_path / "bags")
    assert len(resumed.curve_log.read()) == 3
    write_robot_bag(tmp_path / "bags", rng, [4])
    resumed.ingest_pending(tmp_path / "bags")
    assert [(int(r["length"]), int(r["step"])) for r in resumed.curve_log.read()][3:] == [(38, 190)]
    # The same bags without the return topic: each run of transitions is a row (here, each episode).
    plain = make_trainer(tmp_path / "plain", raw=RawTopics("/obs", "/cmd", "/reward", "/episode", reward_tolerance_s=0.005),
                         action_low=[-2.0], action_high=[2.0])
    plain.ingest(b1)
    assert [int(r["length"]) for r in plain.curve_log.read()] == [19, 19]


def test_raw_command_scale_reads_commands_in_the_models_units(tmp_path):
    """RawTopics.command_scale (the planner's command_scale): commands in newtons, a model in [-1, 1]
    as trained in simulation: the same normalised actions as bounds given in newtons."""
    bag = write_raw_bag(tmp_path / "raw", np.random.default_rng(6))  # commands in [-2, 2]
    in_command_units = RawTopics("/obs", "/cmd", "/reward", "/episode").read(bag, [-2.0], [2.0])
    scaled = RawTopics("/obs", "/cmd", "/reward", "/episode", command_scale=(2.0,)).read(bag, [-1.0], [1.0])
    assert in_command_units.transitions == scaled.transitions > 0
    for a, b in zip(in_command_units.episodes, scaled.episodes):
        np.testing.assert_array_equal(a.action, b.action)
    with pytest.raises(ValueError, match="command_scale"):
        RawTopics("/obs", "/cmd", "/reward", command_scale=(2.0, 3.0)).read(bag, [-1.0], [1.0])


def test_observations_faster_than_the_commands_are_warned_of(tmp_path):
    """A first observation source at 500 Hz (a joint_state_broadcaster at the controller manager's
    rate) and commands at 50 Hz: raw mode's pairs are 2 ms apart and most have no command. The bag is
    read, and the trainer says why so little of it became transitions and what to change."""
    rng = np.random.default_rng(8)
    w = BagWriter(tmp_path / "bags")
    for topic, msgtype in (("/obs", FLOAT64_MULTI_ARRAY), ("/cmd", FLOAT64_MULTI_ARRAY), ("/reward", FLOAT64)):
        w.add_topic(topic, msgtype)
    t, fast = T0, DT // 10
    for k in range(300):
        w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([("obs", OBS)], rng.normal(size=OBS)), t)
        w.write("/reward", FLOAT64, encode_float64(float(rng.normal())), t - 100_000)
        if k % 10 == 0:
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], rng.uniform(-2, 2, ACT)), t + 500_000)
        t += fast
    bag = w.close()
    raw = RawTopics("/obs", "/cmd", "/reward", tolerance_s=0.0005)
    assert raw.read(bag, [-2.0], [2.0]).counts["observations_per_command"] == 10.0
    trainer = make_trainer(tmp_path / "run", raw=raw, action_low=[-2.0], action_high=[2.0], min_transitions=1)
    trainer.ingest_pending(tmp_path / "bags")
    warning = trainer.log.text("warning")
    assert f"bag {bag}: the first observation source publishes 10 times per command" in warning
    assert "set raw_pace to 'command'" in warning and "at the control rate" in warning
    # Paced by commands, the same bag makes a transition per command, and no warning.
    paced = make_trainer(tmp_path / "run_paced", raw=RawTopics("/obs", "/cmd", "/reward", tolerance_s=0.0005,
                                                               pace="command"),
                         action_low=[-2.0], action_high=[2.0], min_transitions=1)
    paced.ingest_pending(tmp_path / "bags")
    assert "times per command" not in paced.log.text("warning") and paced.transitions == 29
    # A bag at the control rate draws no such warning.
    steady = make_trainer(tmp_path / "run2", raw=RawTopics("/obs", "/cmd", "/reward", "/episode"),
                          action_low=[-2.0], action_high=[2.0])
    steady.ingest(write_raw_bag(tmp_path / "steady", rng))
    assert "times per command" not in steady.log.text("warning")


def test_rewards_at_the_commands_matched_by_observation_time_are_warned_of(tmp_path):
    """Paced by commands beside a broadcaster at twice the control rate, reward_node (pace command)
    publishes at each command, up to a broadcast period after the observation it scores: matched to
    the observations' times (within 9 ms), the steps whose reward came later find none. The trainer
    names raw_reward_at; with 'command' the same bag makes a transition per step and draws no warning."""
    rng = np.random.default_rng(12)
    w = BagWriter(tmp_path / "bags")
    for topic, msgtype in (("/obs", FLOAT64_MULTI_ARRAY), ("/cmd", FLOAT64_MULTI_ARRAY), ("/reward", FLOAT64)):
        w.add_topic(topic, msgtype)
    for i in range(200):  # observations every half step; a command after every second one, its reward 1.5 ms later
        t = T0 + i * DT // 2
        w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([("obs", OBS)], rng.normal(size=OBS)), t)
        if i % 2:
            late = 1_000_000 + 8_000_000 * i // 200  # the controller's timer drifts: 1 to 9 ms after the observation
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], rng.uniform(-2, 2, ACT)), t + late)
            w.write("/reward", FLOAT64, encode_float64(float(rng.normal())), t + late + 1_500_000)
    bag = w.close()

    def trainer(run, reward_at):
        raw = RawTopics("/obs", "/cmd", "/reward", tolerance_s=0.002, reward_tolerance_s=0.009, pace="command",
                        reward_at=reward_at)
        t = make_trainer(tmp_path / run, raw=raw, action_low=[-2.0], action_high=[2.0], min_transitions=1)
        t.ingest_pending(tmp_path / "bags")
        return t

    by_observation = trainer("run", "observation")
    warning = by_observation.log.text("warning")
    assert f"bag {bag}: a reward per command (reward_node's pace 'command'?)" in warning, warning
    assert "set raw_reward_at to 'command'" in warning and 0 < by_observation.transitions < 90
    at_commands = trainer("run2", "command")
    assert at_commands.transitions == 99 and "raw_reward_at" not in at_commands.log.text("warning")
    # Rewards at the observation rate (a reward with each observation) are not reward_node's: no warning.
    by_observation._check_reward_times(bag, {"pairs": 99, "skipped_no_reward": 50, "rewards_per_command": 2.0})
    assert by_observation.log.text("warning").count("raw_reward_at") == 1


def test_restart_reconciles_ledger_and_checkpoint(tmp_path):
    """A crash after the ledger mark but before the checkpoint re-ingests that bag (its data died with
    the process); a crash after the checkpoint but before the mark does not ingest it twice."""
    rng = np.random.default_rng(3)
    b1, b2, b3 = write_bags(tmp_path / "bags", [episode(rng, 0, 30), episode(rng, 1, 20), episode(rng, 2, 10)])
    t = make_trainer(tmp_path / "run")
    t.ingest(b1)
    t.ledger.mark(b1, 30, 1)
    t.save()
    t.ingest(b2)
    t.ledger.mark(b2, 20, 1)  # ... and the process dies before the next checkpoint
    log = ListLog()
    t = make_trainer(tmp_path / "run", log=log)
    assert len(t.buffer) == 30 and [b["bag"] for b in t.bags] == [b1.name]
    assert t.pending(tmp_path / "bags") == [b2, b3]
    assert "ingested after the last checkpoint" in log.text("warning")
    t.ingest_pending(tmp_path / "bags")
    assert len(t.buffer) == 60 and [b["bag"] for b in t.bags] == [b1.name, b2.name, b3.name]

    # in the checkpoint, not in the ledger: marked at the next scan, not read again
    b4 = write_bags(tmp_path / "bags", [episode(rng, 3, 15)], start=T0 + 10**12)[0]
    t.ingest(b4)
    t.save()  # ... and the process dies before marking b4
    t = make_trainer(tmp_path / "run")
    assert t.pending(tmp_path / "bags") == []
    assert IngestLedger(tmp_path / "run" / LEDGER).entry(b4)["transitions"] == 15
    assert len(t.buffer) == 75 and t.transitions == 75


@pytest.fixture
def init_weights(tmp_path):
    """A perturbed 1M model saved as weights.pt: its value heads are far from the all-zero start,
    so plans are decisive and ONNX-torch parity is compared number for number."""
    model = make_model("1M", OBS, ACT, seed=3)
    path = tmp_path / "init_weights.pt"
    torch.save({"model": model.state_dict(), "model_config": model.cfg.to_dict(), "discount": 0.99}, path)
    return path


def test_an_episodic_trainer_learns_terminations_from_raw_topics(tmp_path, init_weights):
    """episodic + RawTopics.termination_expression: a robot's falls become terminated transitions
    in the buffer, an episodic model (its termination head) learns them, starting from weights without
    that head (the shipped model, for sim-to-real), and its ladder exports and validates."""
    raw = RawTopics("/obs", "/cmd", "/reward", "/episode", termination_expression="obs[0] > 1.0")
    with pytest.raises(ValueError, match="raw_termination_expression needs episodic: true"):
        make_trainer(tmp_path / "plain", raw=raw, action_low=[-2.0], action_high=[2.0])
    t = make_trainer(tmp_path / "run", raw=raw, episodic=True, init_weights=str(init_weights), action_low=[-2.0],
                     action_high=[2.0], min_transitions=10)
    assert "(the termination head from its initialisation)" in t.log.text("info")
    start = torch.load(init_weights, weights_only=False)["model"]
    model = t.agent.model.state_dict()
    assert all(torch.equal(model[k], v) for k, v in start.items()) and any(k.startswith("_termination") for k in model)
    bag = write_raw_bag(tmp_path / "raw", np.random.default_rng(14), steps=80)
    falls = sum(int((e.terminated == 1).sum()) for e in raw.read(bag, [-2.0], [2.0]).episodes)
    t.ingest(bag)
    assert falls >= 3 and int(t.buffer.state_dict()["terminated"].sum()) == falls
    info = t.train(3)
    assert info["updates"] == 3 and info["termination_loss"] > 0
    m = t.export_and_validate(ModelStore(tmp_path / "store"))
    assert m is not None, t.last_failure
    # The other way round is refused: weights with a termination head do not start a model without one.
    weights = tmp_path / "run" / "weights.pt"
    t.save()
    with pytest.raises(ValueError, match="hold a model"):
        make_trainer(tmp_path / "back", init_weights=str(weights))


def test_export_validate_resume_and_never_publish_a_bad_model(tmp_path, init_weights, monkeypatch):
    rng = np.random.default_rng(4)
    bags = write_bags(tmp_path / "bags", [episode(rng, 0, 50) + episode(rng, 1, 50), episode(rng, 2, 60)])
    run, store = tmp_path / "run", ModelStore(tmp_path / "store")
    t = make_trainer(run, init_weights=str(init_weights), action_repeat=2)
    assert t.discount == 0.99
    t.ingest_pending(tmp_path / "bags")
    info = t.train(20)
    assert info["updates"] == 20 and t.agent.updates == 20 and np.isfinite(info["total_loss"])

    m = t.export_and_validate(store)
    assert m is not None, t.last_failure
    assert m.version.startswith("v0001-") and store.versions() == [m.version]
    assert (m.parent, m.updates, m.env_steps, m.bags) == ("", 20, 320, [b.name for b in bags])
    folder = store.path(m.version)
    (rung,) = read_ladder(folder)
    assert set(m.files) == {"ladder.json", rung.path.name}
    assert all(file_sha256(folder / name) == sha for name, sha in m.files.items())
    v = m.notes["validation"]
    assert v["spec"] == "ok" and v["finite"] == "ok" and v["limit_ms"] == pytest.approx(140.0)
    lat = v["latency"][RUNG.label()]
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] and lat["fits"] and v["chosen_rung"] == RUNG.label()
    parity = v["parity"][RUNG.label()]
    assert parity["compared"] >= 1 and parity["next_mean_max_abs"] <= 1e-3 and parity["value_max_rel"] <= 1e-3
    assert m.notes["new_bags"] == [b.name for b in bags]
    # The graph carries the run's provenance: env steps and the sha256 of the exported weights.pt.
    contract = OnnxPlanner(rung.path).contract
    assert contract.train_step == 320 and contract.checkpoint_sha256 == file_sha256(run / "weights.pt")
    assert (contract.action.low, contract.action.high, contract.task) == ((-1.0,), (1.0,), "cartpole-swingup")

    # Validation refuses a graph that does not plan like the model, and a budget no rung can meet.
    other = make_model("1M", OBS, ACT, seed=11)
    obs = t.buffer.obs[:6]
    report = t.validate(folder, other, obs)
    assert not report.ok and "ONNX and torch plans differ" in report.reason
    strict = make_trainer(tmp_path / "strict", control_rate_hz=1e5)
    report = strict.validate(folder, t._snapshot().model, obs)
    assert not report.ok and "no rung's p99 latency fits" in report.reason
    assert report.notes["latency"][RUNG.label()]["fits"] is False

    # Restart: counters, buffer and the last version come back; no bag is ingested again.
    t.save()
    saved = buffer_state(t)
    log = ListLog()
    t = make_trainer(run, log=log, action_repeat=2)  # init_weights are ignored when resuming
    assert (t.updates, t.agent.updates, t.transitions, t.episodes, t.last_version) == (20, 20, 160, 3, m.version)
    assert [b["bag"] for b in t.bags] == [b.name for b in bags]
    assert_same_state(saved, buffer_state(t))
    assert "resumed from" in log.text("info")
    assert t.ingest_pending(tmp_path / "bags") == []

    # A model with NaN weights fails validation; nothing is added to the store.
    good = {k: v.clone() for k, v in t.agent.model.state_dict().items()}
    with torch.no_grad():
        next(t.agent.model._encoder.parameters())[0, 0] = float("nan")
    assert t.export_and_validate(store) is None
    assert store.versions() == [m.version] and not list((tmp_path / "store").glob(".*"))
    assert "non-finite" in t.last_failure and "not publishing" in log.text("error")
    assert t.last_version == m.version and t.failed_exports == 1

    # Repaired, trained on; the store's disk is full: a failed version, nothing half-written, no crash.
    t.agent.model.load_state_dict(good)
    assert t.train(5)["updates"] == 5
    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(model_store.shutil, "copyfile", disk_full)
        assert t.export_and_validate(store) is None
    assert "nothing was added" in t.last_failure and "No space left" in t.last_failure
    assert store.versions() == [m.version] and not list((tmp_path / "store").glob(".*"))
    assert t.last_version == m.version and t.failed_exports == 2

    # With room again, exported: the new version names its parent.
    m2 = t.export_and_validate(store)
    assert m2 is not None, t.last_failure
    assert store.versions() == [m.version, m2.version] and m2.version.startswith("v0002-")
    assert (m2.parent, m2.updates, m2.env_steps, m2.notes["new_bags"]) == (m.version, 25, 320, [])


def test_cli_train_from_bags(tmp_path, capsys):
    from tdmpc2_ros import cli

    # Without --bags, train is still the online dm_control trainer.
    args = cli.build_parser().parse_args(["train", "--task", "cartpole-swingup", "--steps", "10", "--resume"])
    assert args.bags is None and args.func is cli.cmd_train and args.steps == 10 and args.resume

    rng = np.random.default_rng(5)
    bags = write_bags(tmp_path / "bags", [episode(rng, 0, 60), episode(rng, 1, 40)])
    run, store = tmp_path / "run", tmp_path / "store"
    argv = ["train", "--bags", str(tmp_path / "bags"), "--run-dir", str(run), "--store", str(store), "--updates", "5",
            "--batch-size", "32", "--min-transitions", "50", "--ladder", "2:64:8:8", "--control-rate-hz", "5",
            "--latency-runs", "10", "--threads", "1", "--action-repeat", "1"]
    try:
        assert cli.main(argv) == 0
    finally:
        for h in list(logging.getLogger("tdmpc2_ros.trainer").handlers):
            logging.getLogger("tdmpc2_ros.trainer").removeHandler(h)
    out, err = capsys.readouterr()
    manifest = json.loads(out)
    assert manifest["version"].startswith("v0001-") and manifest["updates"] == 5 and manifest["env_steps"] == 100
    assert manifest["bags"] == [b.name for b in bags]
    assert ModelStore(store).versions() == [manifest["version"]]
    assert err.count("ingested bag") == 2
    ledger = IngestLedger(run / LEDGER)
    assert sorted(ledger.entries) == sorted(b.name for b in bags)
    assert (run / "checkpoint.pt").is_file() and (run / "learning_curve.png").is_file() and (run / "weights.pt").is_file()
    # The run's checkpoint and weights export like any other (tdmpc2-ros export reads both).
    model, discount, task, env_step, _, updates = cli.load_weights(run / "checkpoint.pt", with_updates=True)
    assert (task, env_step, updates, discount) == ("cartpole-swingup", 100, 5, 0.99)

    # Run on twice with --store-keep 1: the newest version and its parent stay, older ones go.
    versions = [manifest["version"]]
    for _ in range(2):
        try:
            assert cli.main(argv + ["--updates", "1", "--store-keep", "1"]) == 0  # the last --updates counts
        finally:
            for h in list(logging.getLogger("tdmpc2_ros.trainer").handlers):
                logging.getLogger("tdmpc2_ros.trainer").removeHandler(h)
        out, err = capsys.readouterr()
        versions.append(json.loads(out)["version"])
    assert ModelStore(store).versions() == versions[1:] and f"removed {versions[0]}" in err


def test_parse_rung():
    assert parse_rung("6:512:64:24") == PlanBudget()
    assert parse_rung("2:64:8:8", "cem") == PlanBudget(planner="cem", iterations=2, num_samples=64, num_elites=8,
                                                       num_pi_trajs=8)
    with pytest.raises(ValueError, match="iterations:samples:elites:pi_trajs"):
        parse_rung("6x512")
