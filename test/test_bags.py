"""tdmpc2_ros.bags without ROS: the writer's complete-or-hidden bags and splitting, transition records
read back exactly, chaining records into episodes without inventing data, raw-topic alignment by
timestamps, bad bags skipped with a reason, and the ingest ledger across restarts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from tdmpc2_ros.bags import (
    BagSkipped,
    BagWriter,
    IngestLedger,
    closed_bags,
    encode_float64,
    encode_float64_multiarray,
    encode_int64,
    episodes_from_bag,
    episodes_from_raw,
    episodes_from_records,
    partial_bags,
    read_record_arrays,
    read_records,
)
from tdmpc2_ros.bags.cdr import FLOAT64, FLOAT64_MULTI_ARRAY, INT64, decode_float64_multiarrays
from tdmpc2_ros.bags.writer import typestore
from tdmpc2_ros.core.buffer import ReplayBuffer
from tdmpc2_ros.training.offline import RawSettingError, RawTopics, dims_of_bag
from tdmpc2_ros.runtime.transition import Transition

T0 = 1_700_000_000_000_000_000  # ns
OBS, ACT = 5, 2


def make_episode(rng, episode: int, steps: int, model: str = "m1", terminated_last: bool = False) -> list[Transition]:
    obs = rng.normal(size=(steps + 1, OBS))
    out = []
    for k in range(steps):
        out.append(Transition(episode, k, obs[k], rng.uniform(-1, 1, ACT), float(rng.normal()), obs[k + 1],
                              terminated=terminated_last and k == steps - 1, truncated=False, model_version=model))
    return out


def as_received(t: Transition) -> Transition:
    """What any subscriber decodes from the wire: Transition.unpack of the packed record."""
    return Transition.unpack(*t.pack())


def assert_same(a: Transition, b: Transition) -> None:
    assert (a.episode, a.step, a.reward, a.terminated, a.truncated, a.model_version) == \
        (b.episode, b.step, b.reward, b.terminated, b.truncated, b.model_version)
    for name in ("obs", "action", "next_obs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def write_all(writer: BagWriter, transitions, dt_ns: int = 20_000_000, start: int = T0) -> list[int]:
    stamps = []
    for i, t in enumerate(transitions):
        stamps.append(start + i * dt_ns)
        writer.write_transition(t, stamps[-1])
    return stamps


# --- CDR ---------------------------------------------------------------------------------------
def test_cdr_matches_rosbags_and_rclpy():
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64, Float64MultiArray, Int64, MultiArrayDimension

    t = make_episode(np.random.default_rng(0), 3, 1)[0]
    dims, data = t.pack()
    ours = encode_float64_multiarray(dims, data)
    ts = typestore()
    F, L, D = (ts.types[f"std_msgs/msg/{n}"] for n in ("Float64MultiArray", "MultiArrayLayout", "MultiArrayDimension"))
    ref = ts.serialize_cdr(F(layout=L(dim=[D(label=lb, size=s, stride=s) for lb, s in dims], data_offset=0),
                             data=np.asarray(data)), FLOAT64_MULTI_ARRAY)
    assert ours == bytes(ref)
    msg = Float64MultiArray(data=data.tolist())
    msg.layout.dim = [MultiArrayDimension(label=lb, size=s, stride=s) for lb, s in dims]
    wire = serialize_message(msg)  # rclpy leaves padding bytes uninitialised: only the fields must agree
    blocks, errors = decode_float64_multiarrays([wire, ours, wire])
    assert errors == [] and list(blocks) == [(tuple(dims), data.size)]
    values, index = blocks[(tuple(dims), data.size)]
    assert index.tolist() == [0, 1, 2] and np.array_equal(values, np.tile(data, (3, 1)))
    assert serialize_message(Float64(data=2.5)) == encode_float64(2.5)
    assert serialize_message(Int64(data=-7)) == encode_int64(-7)


def test_float32_multiarrays_decode_a_layout_at_a_time(monkeypatch):
    """Float32MultiArray (a robot's array topic may carry it; the data are aligned to 4, not 8) as rclpy
    writes it, with labels of every padding length: all little-endian messages take the block path
    (the per-message parse is made to fail), and their values are the float32s exactly."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float32MultiArray, MultiArrayDimension

    from tdmpc2_ros.bags import cdr

    rng = np.random.default_rng(3)
    raws, want = [], []
    for i in range(64):
        label, n = "x" * (i % 8), i % 5
        msg = Float32MultiArray(data=rng.normal(size=n).astype(np.float32).tolist())
        msg.layout.dim = [MultiArrayDimension(label=label, size=n, stride=n)]
        raws.append(serialize_message(msg))
        want.append(((((label, n),), n), np.asarray(msg.data, np.float32).astype(np.float64)))
    monkeypatch.setattr(cdr, "decode_multiarray", lambda *a: (_ for _ in ()).throw(AssertionError("slow path")))
    blocks, errors = cdr.decode_multiarrays(raws, cdr.FLOAT32_MULTI_ARRAY)
    assert errors == [] and len(blocks) == 40
    for i, (key, values) in enumerate(want):
        block, index = blocks[key]
        assert np.array_equal(block[index.tolist().index(i)], values)


# --- writer + records round trip -----------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_exact(tmp_path, storage):
    rng = np.random.default_rng(1)
    written = make_episode(rng, 0, 40) + make_episode(rng, 1, 25, model="m2", terminated_last=True)
    with BagWriter(tmp_path, storage=storage, prefix="run") as w:
        stamps = write_all(w, written)
        w.write("/tdmpc2/episode_return", FLOAT64, encode_float64(12.5), stamps[-1] + 1)
        assert w.current is not None and w.current.name.startswith(".run_") and w.current.name.endswith(".partial")
        assert closed_bags(tmp_path) == []  # the open bag is invisible
    bags = closed_bags(tmp_path)
    assert len(bags) == 1 and partial_bags(tmp_path) == [] and bags == w.closed
    bag = bags[0]
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[storage]
    assert sorted(p.name for p in bag.iterdir()) == sorted(["metadata.yaml", bag.name + suffix])
    with Reader(bag) as r:  # readable by plain rosbags, with the counts ros2 bag info shows
        assert r.message_count == len(written) + 1
        assert {c.topic: c.msgtype for c in r.connections} == {"/tdmpc2/transition": FLOAT64_MULTI_ARRAY,
                                                               "/tdmpc2/episode_return": FLOAT64}
        assert r.start_time == T0 and r.end_time == stamps[-1] + 2
    read = read_records(bag)
    assert len(read) == len(written)
    for a, b in zip(read, written):
        assert_same(a, as_received(b))
    arrays = read_record_arrays(bag)
    assert arrays.timestamp.tolist() == stamps and arrays.dropped == {}
    assert arrays.obs_dim == OBS and arrays.action_dim == ACT


@pytest.mark.parametrize("storage,compression,files", [
    ("mcap", "auto", [".mcap"]), ("mcap", "file", [".mcap.zstd"]), ("mcap", "message", [".mcap"]),
    ("sqlite3", "auto", [".db3"]), ("sqlite3", "file", [".db3.zstd"]), ("sqlite3", "message", [".db3"])])
def test_compressed_bags_read_back_exactly(tmp_path, storage, compression, files):
    """Every compression the writer offers (all zstd) reads back to the same records through rosbags,
    as ros2 bag reads them; auto on MCAP is MCAP's own compressed chunks: a plain .mcap, several
    times smaller than the same records uncompressed."""
    rng = np.random.default_rng(5)
    written = make_episode(rng, 0, 300) + make_episode(rng, 1, 200, terminated_last=True)
    with BagWriter(tmp_path / "c", storage=storage, compression=compression) as w:
        write_all(w, written)
    bag = closed_bags(tmp_path / "c")[0]
    assert sorted(p.name for p in bag.iterdir()) == sorted(["metadata.yaml"] + [bag.name + f for f in files])
    for a, b in zip(read_records(bag), written, strict=True):
        assert_same(a, as_received(b))
    if (storage, compression) == ("mcap", "auto"):
        with BagWriter(tmp_path / "u", compression="none") as w:
            write_all(w, written)
        plain = closed_bags(tmp_path / "u")[0]
        assert (plain / f"{plain.name}.mcap").stat().st_size > 3 * (bag / f"{bag.name}.mcap").stat().st_size
        with Reader(bag) as r:
            assert r.message_count == len(written) and not r.compression_mode  # chunks: no rosbag2 mode


def test_a_compression_the_storage_cannot_do_is_refused_naming_both():
    with pytest.raises(ValueError, match="'chunk' is MCAP's own; sqlite3 has none"):
        BagWriter("/tmp/never", storage="sqlite3", compression="chunk")
    with pytest.raises(ValueError, match="compression must be auto"):
        BagWriter("/tmp/never", compression="lz4")


def test_split_by_size_gives_several_complete_bags(tmp_path):
    rng = np.random.default_rng(2)
    written = make_episode(rng, 0, 200)
    record_bytes = len(encode_float64_multiarray(*written[0].pack()))
    with BagWriter(tmp_path, split_size_bytes=30 * record_bytes) as w:
        write_all(w, written)
    bags = closed_bags(tmp_path)
    assert len(bags) == 7 and partial_bags(tmp_path) == []
    counts = [len(read_records(b)) for b in bags]
    assert counts == [30] * 6 + [20]
    read = [t for b in bags for t in read_records(b)]
    for a, b in zip(read, written, strict=True):
        assert_same(a, as_received(b))
    names = [b.name for b in bags]
    assert names == sorted(names) and [n[-4:] for n in names] == [f"{i:04d}" for i in range(7)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_split_by_duration_and_idle_roll(tmp_path, storage):
    rng = np.random.default_rng(3)
    written = make_episode(rng, 0, 100)
    w = BagWriter(tmp_path, storage=storage, split_duration_s=0.5)
    stamps = write_all(w, written, dt_ns=50_000_000)  # 5 s of data, 10 messages per 0.5 s
    assert len(closed_bags(tmp_path)) == 9  # the tenth is still open
    # the open bag began at stamps[90]: it is due 0.5 s later, even if no message comes
    assert w.roll_if_due(stamps[90] + 490_000_000) is None
    last = w.roll_if_due(stamps[90] + 500_000_000)
    assert last is not None and w.current is None and w.close() is None
    bags = closed_bags(tmp_path)
    assert len(bags) == 10 and bags[-1] == last
    for b in bags:
        ts = read_record_arrays(b).timestamp
        assert len(ts) == 10 and ts[-1] - ts[0] < 500_000_000
    read = [t for b in bags for t in read_records(b)]
    for a, b in zip(read, written, strict=True):
        assert_same(a, as_received(b))


def test_open_bag_is_hidden_and_unreadable_until_closed(tmp_path):
    w = BagWriter(tmp_path)
    write_all(w, make_episode(np.random.default_rng(4), 0, 5))
    hidden = w.current
    assert closed_bags(tmp_path) == [] and partial_bags(tmp_path) == [hidden]
    with pytest.raises(BagSkipped, match="no metadata.yaml"):
        read_records(hidden / hidden.name[1:-len(".partial")])
    w.close()
    assert not hidden.exists() and len(closed_bags(tmp_path)) == 1


# --- records -> episodes ---------------------------------------------------------------------------
def check_never_invents(episodes, transitions):
    """Every transition of every fragment is one of the input transitions, field for field."""
    known = {(t.obs.astype(np.float32).tobytes(), t.action.astype(np.float32).tobytes(),
              np.float32(t.reward).tobytes(), t.next_obs.astype(np.float32).tobytes()) for t in transitions}
    total = 0
    for ep in episodes:
        T = ep.action.shape[0]
        assert ep.obs.shape == (T + 1, OBS) and ep.reward.shape == ep.terminated.shape == (T,)
        assert ep.obs.dtype == ep.action.dtype == ep.reward.dtype == np.float32
        for k in range(T):
            key = (ep.obs[k].tobytes(), ep.action[k].tobytes(), ep.reward[k].tobytes(), ep.obs[k + 1].tobytes())
            assert key in known, f"transition {k} of a fragment is not in the input"
        total += T
    return total


def test_episodes_split_on_gaps_and_never_invent():
    rng = np.random.default_rng(5)
    ep0 = make_episode(rng, 0, 10)
    ep1 = make_episode(rng, 1, 6, terminated_last=True)
    # a lost record (step 5 of episode 0) and a record whose obs does not continue its predecessor
    ep1_broken = list(ep1)
    ep1_broken[3] = Transition(1, 3, ep1[3].obs + 1e-3, ep1[3].action, ep1[3].reward, ep1[3].next_obs)
    transitions = ep0[:5] + ep0[6:] + ep1_broken
    shuffled = [transitions[i] for i in rng.permutation(len(transitions))]
    shuffled += shuffled[:4]  # duplicates (the same record recorded twice)
    episodes = episodes_from_records(shuffled)
    lengths = sorted(e.action.shape[0] for e in episodes)
    assert lengths == [3, 3, 4, 5] and sum(lengths) == len(transitions)
    by_first = {e.obs[0].tobytes(): e for e in episodes}
    e = by_first[ep0[0].obs.astype(np.float32).tobytes()]
    assert np.array_equal(e.obs, np.stack([t.obs for t in ep0[:5]] + [ep0[4].next_obs]).astype(np.float32))
    assert np.array_equal(e.action, np.stack([t.action for t in ep0[:5]]).astype(np.float32))
    assert np.array_equal(e.reward, np.array([t.reward for t in ep0[:5]], np.float32))
    tail = by_first[ep1_broken[3].obs.astype(np.float32).tobytes()]
    assert tail.terminated.tolist() == [0.0, 0.0, 1.0]
    assert by_first[ep1[0].obs.astype(np.float32).tobytes()].terminated.tolist() == [0.0, 0.0, 0.0]
    assert check_never_invents(episodes, transitions) == len(transitions)
    buffer = ReplayBuffer(1000, OBS, ACT, horizon=3)
    for ep in episodes:
        buffer.add_episode(*ep)
    assert len(buffer) == len(transitions) and buffer.num_episodes == 4
    assert [e.action.shape[0] for e in episodes_from_records(shuffled, min_transitions=4)] in ([5, 4], [4, 5])


def test_reused_episode_ids_and_terminal_records_do_not_chain():
    rng = np.random.default_rng(6)
    run_a, run_b = make_episode(rng, 0, 8, model="a"), make_episode(rng, 0, 8, model="b")  # a restart reuses id 0
    interleaved = [t for pair in zip(run_a, run_b) for t in pair]
    episodes = episodes_from_records(interleaved)
    assert sorted(e.action.shape[0] for e in episodes) == [8, 8]
    assert check_never_invents(episodes, interleaved) == 16
    # a terminated record ends its fragment even if a "next" record claims to continue it
    done = make_episode(rng, 2, 4, terminated_last=True)
    after = Transition(2, 4, done[-1].next_obs, np.zeros(ACT), 0.0, rng.normal(size=OBS))
    assert sorted(e.action.shape[0] for e in episodes_from_records(done + [after])) == [1, 4]
    assert episodes_from_records([]) == []


def test_episodes_from_bag_match_in_memory_chaining(tmp_path):
    rng = np.random.default_rng(7)
    written = make_episode(rng, 0, 30) + make_episode(rng, 1, 30)
    with BagWriter(tmp_path) as w:
        write_all(w, written[:12] + written[13:])
    from_bag = episodes_from_bag(closed_bags(tmp_path)[0])
    in_memory = episodes_from_records(written[:12] + written[13:])
    assert [e.action.shape[0] for e in from_bag] == [12, 17, 30]
    for a, b in zip(from_bag, in_memory, strict=True):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_an_mcap_bag_of_20k_records_reaches_the_buffer_whole(tmp_path):
    """Its speed (bar: 20k transitions/s) is `tdmpc2-ros bench-loop --parts ingest`'s, not a test's."""
    n = 20_000
    rng = np.random.default_rng(8)
    written = [t for e in range(20) for t in make_episode(rng, e, n // 20)]
    with BagWriter(tmp_path) as w:
        write_all(w, written)
    bag = closed_bags(tmp_path)[0]
    buffer = ReplayBuffer(n + 100, OBS, ACT, horizon=3)
    for ep in episodes_from_bag(bag):
        buffer.add_episode(*ep)
    assert len(buffer) == n and buffer.num_episodes == 20
    first = written[0]
    assert np.array_equal(buffer.obs[0], first.obs.astype(np.float32))


# --- raw topics ------------------------------------------------------------------------------------
DT = 20_000_000  # 50 Hz
MS = 1_000_000


def write_raw_bag(directory, rng, *, obs_label="obs", rewards=True, commands=True, odd_commands=False):
    """Two episodes of a 3-dim system with action bounds [-10, 10] x [0, 4], recorded as the sim and a
    controller publish them: episode announcement, then observations; a command 3 ms (+-1 ms) after
    each observation; the step's reward 0.2 ms before the next observation. The last observation of
    an episode is never published (as in sim_node). Irregularities (documented in the return):
    step 7's command arrives 19 ms late (outside the window), step 11's reward 8 ms early, and
    observation 15 of episode 0 is lost. odd_commands: in episode 1, a 3-value command (no layout, like
    the 2-value ones) or an empty one, by turns, 1 ms after each observation, as a misconfigured teleop
    might send."""
    low, high = np.array([-10.0, 0.0]), np.array([10.0, 4.0])
    truth = []  # (episode, obs, action_normalised, reward, next_obs)
    w = BagWriter(directory)
    w.add_topic("/obs", FLOAT64_MULTI_ARRAY)
    w.add_topic("/cmd", FLOAT64_MULTI_ARRAY)
    w.add_topic("/reward", FLOAT64)
    w.add_topic("/episode", INT64)
    t = T0
    lengths = (20, 12)
    for episode, steps in enumerate(lengths):
        obs = rng.normal(size=(steps + 1, 3))
        act = rng.uniform(-1, 1, size=(steps, 2))
        rew = rng.normal(size=steps)
        w.write("/episode", INT64, encode_int64(episode), t - 100_000)
        for k in range(steps):
            jitter = int(rng.integers(-MS, MS))
            if not (episode == 0 and k == 15):
                dims = [(obs_label, 3)] if obs_label else [("", 3)]
                w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray(dims, obs[k]), t + jitter)
            cmd = low + (act[k] + 1) / 2 * (high - low)
            cmd_t = t + jitter + 3 * MS + int(rng.integers(-MS, MS))
            if episode == 0 and k == 7:
                cmd_t = t + 19 * MS  # too late for step 7 (window ends at T_8 - 5 ms)
            if commands:
                w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], cmd), cmd_t)
            if odd_commands and episode == 1:
                odd = [1.0, 2.0, 3.0] if k % 2 else []
                w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], odd), t + jitter + MS)
            reward_t = t + DT - 200_000 - (8 * MS if (episode == 0 and k == 11) else 0)
            if rewards:
                w.write("/reward", FLOAT64, encode_float64(rew[k]), reward_t)
            truth.append((episode, k, obs[k], act[k], rew[k], obs[k + 1]))
            t += DT
        t += DT  # reset
    return w.close(), truth, low, high


def test_raw_alignment_with_jitter_and_skips(tmp_path):
    bag, truth, low, high = write_raw_bag(tmp_path, np.random.default_rng(9))
    result = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high,
                               tolerance_s=0.005)
    c = result.counts
    # episode 0: 19 published observations -> 18 pairs; (14, 16) is a gap; step 7 lacks its command
    # (the late one lands in step 8's window, where step 8's own command is later and wins); step 11
    # lacks its reward. Episode 1: 12 observations -> 11 pairs. One pair crosses the episode boundary.
    assert c["observations"] == 31 and c["pairs"] == 30
    assert c["skipped_episode_boundary"] == 1 and c["skipped_gap"] == 1
    assert c["skipped_no_command"] == 1 and c["skipped_no_reward"] == 1 and c["skipped_ambiguous_reward"] == 0
    assert c["transitions"] == 26 == result.transitions
    assert c["unmatched_commands"] == 32 - 26 and c["unmatched_rewards"] == 32 - 26
    assert c["clipped_commands"] == 0 and c["malformed_commands"] == 0
    # fragments of episode 0: steps 0-6, 8-10, 12-13 and 16-18 (14 -> 16 is a gap; step 19's next
    # observation was never published); episode 1: steps 0-10 (step 11's next observation is missing)
    expected = [(0, range(0, 7)), (0, range(8, 11)), (0, range(12, 14)), (0, range(16, 19)), (1, range(0, 11))]
    assert [e.action.shape[0] for e in result.episodes] == [len(r) for _, r in expected]
    table = {(e, k): (o, a, r, no) for e, k, o, a, r, no in truth}
    for ep, (episode, steps) in zip(result.episodes, expected):
        for i, k in enumerate(steps):
            o, a, r, no = table[(episode, k)]
            assert np.array_equal(ep.obs[i], o.astype(np.float32))
            assert np.array_equal(ep.obs[i + 1], no.astype(np.float32))
            assert np.allclose(ep.action[i], a, atol=1e-6) and ep.reward[i] == np.float32(r)
        assert not ep.terminated.any()



def test_raw_termination_from_an_expression_of_the_next_observation(tmp_path):
    """A termination expression of obs (RawTopics.termination_expression): a pair whose next observation
    makes it true is terminated and ends its fragment; the rest of the transitions are those of the
    plain reading. An expression that fails on an observation skips that pair, counted."""
    from tdmpc2_ros.runtime.expressions import Expression

    bag, truth, low, high = write_raw_bag(tmp_path, np.random.default_rng(9))
    plain = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high)
    fell = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high,
                             termination=Expression("obs[0] > 0.5", "termination"))
    ends = [bool(e.obs[i + 1, 0] > 0.5) for e in plain.episodes for i in range(e.action.shape[0])]
    assert 2 <= sum(ends) and fell.counts["terminations"] == sum(ends) and fell.transitions == plain.transitions
    np.testing.assert_array_equal(np.concatenate([e.terminated for e in fell.episodes]), np.float32(ends))
    np.testing.assert_array_equal(np.concatenate([e.action for e in fell.episodes]),
                                  np.concatenate([e.action for e in plain.episodes]))
    for e in fell.episodes:  # a termination only ever ends a fragment
        assert not e.terminated[:-1].any() and (e.terminated[-1] == 1) == (e.obs[-1, 0] > 0.5)
    assert len(fell.episodes) == len(plain.episodes) + sum(
        int((e.obs[1:-1, 0] > 0.5).sum()) for e in plain.episodes)  # one more fragment per inner termination
    # An expression that raises where obs[0] < -0.5 (no obs[7]): those pairs are skipped.
    raising = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high,
                                  termination=Expression("obs[0] > 0.5 if obs[0] > -0.5 else obs[7]", "termination"))
    undecided = sum(int((e.obs[1:, 0] < -0.5).sum()) for e in plain.episodes)
    assert undecided >= 2 and raising.counts["skipped_bad_termination"] == undecided
    assert raising.transitions == plain.transitions - undecided and raising.counts["transitions"] == raising.transitions
    for unused in ("unmatched_commands", "unmatched_rewards"):  # a skipped pair's command and reward went unused
        assert raising.counts[unused] == plain.counts[unused] + undecided, (unused, raising.counts, plain.counts)
    with pytest.raises(ValueError, match="termination_expression 'obs\\[0\\] >' is not a valid expression"):
        RawTopics("/obs", "/cmd", "/reward", termination_expression="obs[0] >")


JOINT_STATE, TRAJECTORY = "sensor_msgs/msg/JointState", "trajectory_msgs/msg/JointTrajectory"


def _robot_message(msgtype: str, stamp_ns: int, **fields):
    """A rosbags message of a robot's own type, serialised as `ros2 bag record` stores it."""
    store = typestore()
    types = store.types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                          nanosec=stamp_ns % 10**9), frame_id="")
    if msgtype == TRAJECTORY:
        point = types["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(fields.pop("positions"), np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=DT))
        msg = types[TRAJECTORY](header=header, joint_names=fields.pop("joint_names"), points=[point])
    else:
        msg = types[msgtype](header=header, **fields)
    return store.serialize_cdr(msg, msgtype)


def test_raw_bags_of_a_robots_joint_states_imu_and_trajectory_commands(tmp_path):
    """A robot's own topics, as `ros2 bag record` takes them beside another controller: /joint_states
    (joints listed in another order than the observation's), an Imu at a third of the rate on its own
    topic, and a joint_trajectory_controller's JointTrajectory (one point, positions). The trainer
    reads them through the planner's observation sources and command format: each observation is
    the one the planner would have assembled at that /joint_states message (the newest Imu at or
    before it), each action the commanded position mapped to [-1, 1]."""
    from tdmpc2_ros.bags.reader import CommandFormat

    rng = np.random.default_rng(12)
    low, high = np.array([-0.5]), np.array([0.5])
    sources = ["joint_state:/joint_states:position:slider", "joint_state:/joint_states:cos(position):hinge_1",
               "joint_state:/joint_states:sin(position):hinge_1", "joint_state:/joint_states:velocity:slider",
               "imu:/imu:angular_velocity.z"]
    w = BagWriter(tmp_path)
    steps, t, truth, imu_z = 30, T0, [], None
    w.write("/episode", INT64, encode_int64(0), t - 100_000)
    for k in range(steps + 1):
        if k % 3 == 1:  # the Imu speaks first at step 1: observation 0 has none yet
            imu_z = float(rng.normal())
            imu = dict(orientation=typestore().types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                       orientation_covariance=np.zeros(9),
                       angular_velocity=typestore().types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=imu_z),
                       angular_velocity_covariance=np.zeros(9),
                       linear_acceleration=typestore().types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=9.81),
                       linear_acceleration_covariance=np.zeros(9))
            w.write("/imu", "sensor_msgs/msg/Imu", _robot_message("sensor_msgs/msg/Imu", t - MS, **imu), t - MS)
        slider, hinge, slider_v = rng.normal(), rng.uniform(-np.pi, np.pi), rng.normal()
        w.write("/joint_states", JOINT_STATE, _robot_message(JOINT_STATE, t, name=["hinge_1", "slider"],
                position=np.array([hinge, slider]), velocity=np.array([0.3, slider_v]), effort=np.zeros(0)), t)
        obs = [slider, np.cos(hinge), np.sin(hinge), slider_v, imu_z]
        if k < steps:
            action = rng.uniform(-1, 1)
            positions = [0.25] if k == 9 else [low[0] + (action + 1) / 2 * (high[0] - low[0])]
            names = ["elbow"] if k == 9 else ["slider"]  # step 9: a command for another joint: malformed
            w.write("/trajectory", TRAJECTORY, _robot_message(TRAJECTORY, 0, joint_names=names, positions=positions),
                    t + 3 * MS)
            w.write("/reward", FLOAT64, encode_float64(float(k)), t + DT - 200_000)
        truth.append((obs, action))
        t += DT
    bag = w.close()
    raw = RawTopics("", "/trajectory", "/reward", "/episode", observation_sources=tuple(sources),
                    command=CommandFormat("joint_trajectory", ("slider",), "position"))
    result = raw.read(bag, low, high)
    c = result.counts
    assert c["observations_before_all_topics"] == 1 and c["observations"] == steps  # observation 0: no Imu yet
    assert c["malformed_commands"] == 1 and c["skipped_no_command"] == 1 and c["malformed_observations"] == 0
    # Observations 1..30: pairs 1-8 and 10-29 (step 9's command named another joint).
    assert [e.action.shape[0] for e in result.episodes] == [8, 20]
    for ep, first in zip(result.episodes, (1, 10)):
        for i in range(ep.action.shape[0]):
            obs, action = truth[first + i]
            assert np.allclose(ep.obs[i], np.float32(obs)) and np.allclose(ep.obs[i + 1], np.float32(truth[first + i + 1][0]))
            assert np.isclose(ep.action[i, 0], action, atol=1e-6) and ep.reward[i] == first + i
    assert dims_of_bag(bag, raw, low, high) == (5, 1)
    # The same bag read with a command format that does not fit it is skipped with the reason.
    with pytest.raises(BagSkipped, match="is trajectory_msgs/msg/JointTrajectory, expected std_msgs/msg/Float64MultiArray"):
        RawTopics("", "/trajectory", "/reward", observation_sources=tuple(sources)).read(bag, low, high)
    with pytest.raises(ValueError, match="command_type joint_state needs command_joints"):
        RawTopics("", "/trajectory", "/reward", observation_sources=tuple(sources), command=CommandFormat("joint_state"))
    with pytest.raises(ValueError, match="observation source"):
        raw_bad = RawTopics("", "/trajectory", "/reward", observation_sources=("joint_state:/joint_states:torque:x",),
                            command=CommandFormat("joint_trajectory", ("slider",), "position"))
        raw_bad.read(bag, low, high)


def test_raw_observations_from_a_joint_state_and_an_array_topic(tmp_path):
    """Sources of two kinds on two topics: a JointState read by byte offset and a Float64MultiArray
    read a layout at a time (bags/fields.py). An array message of another width makes the one
    observation that uses it malformed, and so does a reading beyond float32's range (1e39 would be
    Inf in the replay buffer), as does such a reward; the others are the values written, in order."""
    rng = np.random.default_rng(13)
    w = BagWriter(tmp_path)
    steps, t, truth = 12, T0, []
    for k in range(steps + 1):
        extra = rng.normal(size=3 if k == 4 else 2)
        w.write("/extra", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], extra), t - MS)
        slider = 1e39 if k == 8 else float(rng.normal())
        w.write("/joint_states", JOINT_STATE, _robot_message(JOINT_STATE, t, name=["slider"], position=np.array([slider]),
                                                             velocity=np.zeros(0), effort=np.zeros(0)), t)
        truth.append([slider, *extra])
        if k < steps:
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [0.5]), t + 3 * MS)
            w.write("/reward", FLOAT64, encode_float64(-1e39 if k == 10 else float(k)), t + DT - 200_000)
        t += DT
    bag = w.close()
    raw = RawTopics("", "/cmd", "/reward", observation_sources=("joint_state:/joint_states:position:slider",
                                                                 "array:/extra:all"))
    result = raw.read(bag, [-1.0], [1.0])
    assert result.counts["malformed_observations"] == 2 and result.counts["observations"] == steps - 1
    assert result.counts["malformed_rewards"] == 1 and result.counts["skipped_no_reward"] == 1
    # Observations 4 and 8 are gone, and the reward of 10 -> 11: pairs 0-2, 5-6, 9, 11.
    assert [e.action.shape[0] for e in result.episodes] == [3, 2, 1, 1]
    for ep, first in zip(result.episodes, (0, 5, 9, 11)):
        for i in range(ep.obs.shape[0]):
            assert np.array_equal(ep.obs[i], np.float32(truth[first + i]))


def test_raw_alignment_without_obs_label_and_tighter_tolerance(tmp_path):
    bag, _, low, high = write_raw_bag(tmp_path, np.random.default_rng(10), obs_label="")
    wide = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high)
    assert wide.transitions == 26  # unlabelled observations: all data is the observation
    # With a 0.1 ms tolerance, rewards (0.2 ms before the observation, plus up to 1 ms jitter) mostly miss.
    tight = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high,
                              tolerance_s=0.0001)
    assert tight.transitions < wide.transitions and tight.counts["skipped_no_reward"] > 1


def test_a_reward_tolerance_of_its_own_leaves_the_commands_window_alone(tmp_path):
    """reward_tolerance_s: rewards matched within their own tolerance (reward_node's come a few ms
    after the observation they score); the commands' windows keep tolerance_s."""
    bag, _, low, high = write_raw_bag(tmp_path, np.random.default_rng(9))
    wider = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high,
                              tolerance_s=0.005, reward_tolerance_s=0.009)
    # Step 11's reward, 8 ms early, is now its step's; step 7 still lacks its command.
    assert wider.counts["skipped_no_reward"] == 0 and wider.counts["skipped_no_command"] == 1
    assert wider.transitions == 27
    with pytest.raises(ValueError, match="reward_tolerance_s"):
        episodes_from_raw(bag, "/obs", "/cmd", "/reward", action_low=low, action_high=high, reward_tolerance_s=0.0)


def test_raw_paced_by_commands_beside_a_500_hz_joint_state_broadcaster(tmp_path):
    """pace="command": /joint_states at 500 Hz (a joint_state_broadcaster at the controller manager's
    rate), a 50 Hz controller commanding 4.5 ms after each of its ticks, reward_node scoring each
    /joint_states message 0.3 ms after it. A transition per command: the observation is the newest
    /joint_states at or before the command, the reward the one of the next command's observation.
    Irregularities: command 20 is lost (a gap), command 40 is resent 0.5 ms later with another value
    (the second acted), and /joint_states stops for 32 ms (commands 50 and 51 have no fresh
    observation). Paced by observations, the same bag gives pairs 2 ms apart, nine in ten without a
    command."""
    rng = np.random.default_rng(21)
    fast, commands = 2 * MS, 60
    sources = ("joint_state:/joint_states:position:slider", "joint_state:/joint_states:velocity:slider")
    w = BagWriter(tmp_path)
    w.write("/episode", INT64, encode_int64(0), T0 - MS)
    state = rng.normal(size=(10 * commands + 10, 2))
    for i in range(state.shape[0]):
        if 500 <= i < 516:
            continue  # the broadcaster stalls from 1000 ms to 1032 ms
        t = T0 + i * fast
        w.write("/joint_states", JOINT_STATE, _robot_message(JOINT_STATE, t, name=["slider"], position=state[i, :1],
                                                             velocity=state[i, 1:], effort=np.zeros(0)), t)
        w.write("/reward", FLOAT64, encode_float64(float(i)), t + 300_000)
    action = rng.uniform(-1, 1, size=commands)
    resent = rng.uniform(-1, 1)
    for k in range(commands):
        if k == 20:
            continue
        w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [10 * action[k]]), T0 + k * DT + 4 * MS + MS // 2)
        # reward_node paced by commands: at each, the reward of the newest state (index 10k + 2, or 499 in the stall)
        newest = 499 if k in (50, 51) else 10 * k + 2
        w.write("/reward_at_commands", FLOAT64, encode_float64(float(newest)), T0 + k * DT + 4 * MS + 900_000)
        if k == 40:
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [10 * resent]), T0 + k * DT + 5 * MS)
            w.write("/reward_at_commands", FLOAT64, encode_float64(float(newest)), T0 + k * DT + 5 * MS + 400_000)
    bag = w.close()
    acted = action.copy()
    acted[40] = resent

    raw = RawTopics("", "/cmd", "/reward", "/episode", tolerance_s=0.002, reward_tolerance_s=0.001,
                    observation_sources=sources, pace="command")
    result = raw.read(bag, [-10.0], [10.0])
    assert result.counts["commands_without_observation"] == 2 and result.counts["observations_per_command"] == 10.0
    # Commands 0-19, 21-49 and 52-59 each pair with the next: 19 + 28 + 7 transitions.
    assert [e.action.shape[0] for e in result.episodes] == [19, 28, 7]
    for ep, first in zip(result.episodes, (0, 21, 52)):
        ks = np.arange(first, first + ep.action.shape[0] + 1)
        np.testing.assert_array_equal(ep.obs, np.float32(state[10 * ks + 2]))  # newest at 4.5 ms past each tick
        np.testing.assert_allclose(ep.action[:, 0], np.float32(acted[ks[:-1]]), atol=1e-6)
        np.testing.assert_array_equal(ep.reward, np.float32(10 * ks[1:] + 2))  # the next observation's reward
    # reward_node paced by commands: its rewards come at the commands, and make the same transitions.
    at_commands = RawTopics("", "/cmd", "/reward_at_commands", "/episode", tolerance_s=0.002, reward_tolerance_s=0.009,
                            observation_sources=sources, pace="command").read(bag, [-10.0], [10.0])
    assert [e.action.shape[0] for e in at_commands.episodes] == [19, 28, 7]
    matched_at_commands = RawTopics("", "/cmd", "/reward_at_commands", "/episode", tolerance_s=0.002,
                                    reward_tolerance_s=0.009, observation_sources=sources, pace="command",
                                    reward_at="command").read(bag, [-10.0], [10.0])
    for other in (at_commands, matched_at_commands):
        assert [e.action.shape[0] for e in other.episodes] == [19, 28, 7]
        for a, b in zip(result.episodes, other.episodes):
            np.testing.assert_array_equal(a.obs, b.obs), np.testing.assert_array_equal(a.action, b.action)
            np.testing.assert_array_equal(a.reward, b.reward)

    by_observation = RawTopics("", "/cmd", "/reward", "/episode", tolerance_s=0.002, reward_tolerance_s=0.001,
                               observation_sources=sources).read(bag, [-10.0], [10.0])
    # 2 ms pairs, one in ten with a command: fragments of one transition each, of 2 ms dynamics.
    assert {e.action.shape[0] for e in by_observation.episodes} == {1}
    assert by_observation.counts["skipped_no_command"] > 8 * by_observation.transitions
    with pytest.raises(ValueError, match="pace 'tick' is not one of observation, command"):
        RawTopics("", "/cmd", "/reward", observation_sources=sources, pace="tick")


BROADCAST = ("joint_state:/joint_states:position:slider", "joint_state:/joint_states:velocity:slider")


def _broadcaster_at_100_hz(directory, rng, n: int, lost: int | None = None) -> tuple[BagWriter, np.ndarray]:
    """A bag with episode 0 and n random states [n, 2] on /joint_states (the BROADCAST sources) every
    10 ms, stamped with their time; the recorder loses state `lost`. -> (the open writer, states)."""
    w = BagWriter(directory)
    w.write("/episode", INT64, encode_int64(0), T0 - MS)
    state = rng.normal(size=(n, 2))
    for i in range(n):
        t = T0 + i * 10 * MS
        if i != lost:
            w.write("/joint_states", JOINT_STATE, _robot_message(JOINT_STATE, t, name=["slider"], position=state[i, :1],
                                                                 velocity=state[i, 1:], effort=np.zeros(0)), t)
    return w, state


def test_paced_by_commands_reward_nodes_rewards_are_matched_at_the_commands_beside_a_100_hz_broadcaster(tmp_path):
    """ros2_control's default controller manager rate, 100 Hz, beside a 50 Hz controller: the newest
    /joint_states at a command is 0-10 ms old, and reward_node (pace command) publishes its reward
    1.5 ms after the command. Matched to the observation's time (within 9 ms), a fifth of those rewards
    are too late or claimed twice; matched to the command that ends the step (reward_at "command"),
    every step has its own reward."""
    rng, commands = np.random.default_rng(33), 80
    w, state = _broadcaster_at_100_hz(tmp_path, rng, 2 * commands + 4)
    action = rng.uniform(-1, 1, size=commands)
    phase = np.linspace(MS, 19 * MS, commands).astype(np.int64)  # the planner's timer drifts against the broadcaster
    newest = (np.arange(commands) * DT + phase) // (10 * MS)  # index of the newest /joint_states at each command
    for k in range(commands):
        t = T0 + k * DT + int(phase[k])
        w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [10 * action[k]]), t)
        w.write("/reward", FLOAT64, encode_float64(float(newest[k])), t + 3 * MS // 2)
    bag = w.close()

    def read(reward_at):
        return RawTopics("", "/cmd", "/reward", "/episode", tolerance_s=0.002, reward_tolerance_s=0.009,
                         observation_sources=BROADCAST, pace="command", reward_at=reward_at).read(bag, [-10.0], [10.0])

    at_commands = read("command")
    assert at_commands.counts["observations_per_command"] == 2.0
    assert [e.action.shape[0] for e in at_commands.episodes] == [commands - 1]
    (ep,) = at_commands.episodes
    np.testing.assert_array_equal(ep.obs, np.float32(state[newest]))
    np.testing.assert_allclose(ep.action[:, 0], np.float32(action[:-1]), atol=1e-6)
    np.testing.assert_array_equal(ep.reward, np.float32(newest[1:]))  # the step's own reward, every one
    at_observations = read("observation")
    lost = at_observations.counts["skipped_no_reward"] + at_observations.counts["skipped_ambiguous_reward"]
    assert lost >= (commands - 1) // 5 and at_observations.transitions == commands - 1 - lost, at_observations.counts
    with pytest.raises(RawSettingError, match="needs raw_pace 'command'") as refused:
        RawTopics("", "/cmd", "/reward", observation_sources=BROADCAST, reward_at="command")  # paced by observations
    assert refused.value.name == "raw_reward_at"
    with pytest.raises(ValueError, match="reward_at 'command'"):
        episodes_from_raw(bag, "", "/cmd", "/reward", observation_sources=BROADCAST, action_low=[-10.0],
                          action_high=[10.0], reward_at="command")


def test_header_stamps_of_either_byte_order_and_refusals():
    from tdmpc2_ros.bags.cdr import header_stamps

    store = typestore()
    types = store.types

    def joint_state(stamp_ns, little_endian=True):
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        msg = types[JOINT_STATE](header=types["std_msgs/msg/Header"](stamp=stamp, frame_id="base"), name=["a"],
                                 position=np.zeros(1), velocity=np.zeros(0), effort=np.zeros(0))
        return bytes(store.serialize_cdr(msg, JOINT_STATE, little_endian=little_endian))

    raws = [joint_state(T0 + 5), joint_state(T0 + 7, little_endian=False), b"\x00\x01\x00", joint_state(3 * 10**9)]
    stamps, ok = header_stamps(raws)
    assert ok.tolist() == [True, True, False, True]  # 3 bytes: not a message
    assert stamps[ok].tolist() == [T0 + 5, T0 + 7, 3 * 10**9]


def _stamped_reward(value: float, stamp_ns: int) -> bytes:
    """reward_node's stamped reward (stamped: true): the reward and the stamp of the state it scored."""
    return encode_float64_multiarray([("reward", 1), ("stamp", 2)], [value, stamp_ns // 10**9, stamp_ns % 10**9])


def test_stamped_rewards_pick_the_state_reward_node_scored_where_two_processes_heard_the_topics_in_other_orders(
        tmp_path):
    """A 100 Hz broadcaster beside a 50 Hz controller whose commands come within 0.3 ms of a joint
    state: the recorder hears that joint state before or after the command, and reward_node (another
    process) scores the newest it heard, which half the time is the other one. Its plain rewards then
    score a state one broadcast period away from the transition's o_{k+1} for those steps; stamped,
    each transition's next observation is the state its reward scored, every step. A reward naming a
    state the recorder lost is never paired with another state: that pair is skipped and counted. A
    command superseded before the next (sharing its observation, as a resent one) is not the action of
    the step before: it came after that step's end state."""
    rng = np.random.default_rng(35)
    commands, lost = 60, 63  # the recorder loses the joint state reward_node scored at command 31
    w, state = _broadcaster_at_100_hz(tmp_path, rng, 2 * commands + 4, lost=lost)
    action = rng.uniform(-1, 1, size=commands)
    # k % 4: 0 the recorder hears the command first, reward_node the joint state; 1 the reverse; 2 and 3
    # both hear them in the same order.
    after = np.arange(commands) % 4 % 2 == 1  # the command reaches the recorder 0.3 ms after joint state 2k+1
    scored = 2 * np.arange(commands) + np.isin(np.arange(commands) % 4, (0, 3))  # reward_node's newest state
    for k in range(commands):
        t = T0 + k * DT + 10 * MS + (300_000 if after[k] else -300_000)
        stamp = T0 + int(scored[k]) * 10 * MS
        sent = [(t - 37 * MS // 10, 0.5), (t, action[k])] if k == 46 else [(t, action[k])]  # 46: superseded at 6 ms
        for at, value in sent:  # reward_node scores at each command
            w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [10 * value]), at)
            w.write("/reward", FLOAT64, encode_float64(float(scored[k])), at + 3 * MS // 2)
            w.write("/reward_stamped", FLOAT64_MULTI_ARRAY, _stamped_reward(float(scored[k]), stamp), at + 3 * MS // 2)
    bag = w.close()

    def read(reward_topic):
        return RawTopics("", "/cmd", reward_topic, "/episode", tolerance_s=0.002, reward_tolerance_s=0.009,
                         observation_sources=BROADCAST, pace="command", reward_at="command").read(bag, [-10.0], [10.0])

    newest = 2 * np.arange(commands) + after  # the newest state the recorder heard at each command
    newest[newest == lost] = lost - 1
    plain = read("/reward")
    (ep,) = plain.episodes
    np.testing.assert_array_equal(ep.obs, np.float32(state[newest]))
    wrong = ep.reward != newest[1:]  # rewards of a state one broadcast period from o_{k+1}
    assert wrong.sum() >= commands // 3, ep.reward

    stamped = read("/reward_stamped")
    assert stamped.counts["skipped_reward_of_another_observation"] == 1, stamped.counts
    assert [e.action.shape[0] for e in stamped.episodes] == [30, commands - 32]  # pair 30 -> 31 skipped
    for ep, ks in zip(stamped.episodes, (np.arange(0, 31), np.arange(31, commands))):
        at = scored[ks].copy()
        at[ks == 31] = lost - 1  # the recorder's newest at command 31: its reward named the lost state
        np.testing.assert_array_equal(ep.obs, np.float32(state[at]))  # the state reward_node scored
        np.testing.assert_allclose(ep.action[:, 0], np.float32(action[ks[:-1]]), atol=1e-6)
        np.testing.assert_array_equal(ep.reward, np.float32(at[1:]))  # each step's reward scored its o_{k+1}

    # A stamped reward needs a stamped first source: an array topic has no header to match.
    w = BagWriter(tmp_path / "arrays")
    for k in range(4):
        w.write("/obs", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [float(k)]), T0 + k * DT)
        w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [0.0]), T0 + k * DT + MS)
        w.write("/reward", FLOAT64_MULTI_ARRAY, _stamped_reward(1.0, T0 + k * DT), T0 + k * DT + 2 * MS)
    with pytest.raises(BagSkipped, match="the rewards on /reward are stamped, but the observations' first topic /obs "
                                         "has no header stamp to match them to"):
        episodes_from_raw(w.close(), "", "/cmd", "/reward", observation_sources=["array:/obs:all"], action_low=[-1.0],
                          action_high=[1.0])


def test_paced_by_observations_a_stamped_reward_must_name_the_step_s_next_observation(tmp_path):
    """A reward per joint state, 1 ms after it: matched by time, and kept only where its stamp names
    that joint state. One that names the state before (a stale score) is skipped, not kept."""
    sources = ("joint_state:/joint_states:position:slider",)
    w = BagWriter(tmp_path)
    for k in range(20):
        t = T0 + k * DT
        w.write("/joint_states", JOINT_STATE, _robot_message(JOINT_STATE, t, name=["slider"], position=np.array([float(k)]),
                                                             velocity=np.zeros(0), effort=np.zeros(0)), t)
        w.write("/cmd", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([], [0.1 * k]), t + 2 * MS)
        named = t - DT if k == 12 else t
        w.write("/reward", FLOAT64_MULTI_ARRAY, _stamped_reward(float(k), named), t + MS)
    result = RawTopics("", "/cmd", "/reward", tolerance_s=0.002, observation_sources=sources).read(w.close(), [-1.0],
                                                                                                    [1.0])
    assert result.counts["skipped_reward_of_another_observation"] == 1, result.counts
    assert [e.action.shape[0] for e in result.episodes] == [11, 7]  # pair 11 -> 12 skipped
    for ep in result.episodes:
        np.testing.assert_array_equal(ep.reward, ep.obs[1:, 0])  # each reward scored its step's next state


def test_raw_commands_of_another_width_are_malformed_not_fatal(tmp_path):
    """Arrays without a layout differ only in length: commands of another width, empty ones included,
    are counted and dropped, and every transition the bag holds is still rebuilt."""
    bag, _, low, high = write_raw_bag(tmp_path, np.random.default_rng(9), odd_commands=True)
    result = episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high)
    assert result.counts["malformed_commands"] == 12 and result.transitions == 26


# --- bad bags --------------------------------------------------------------------------------------
def test_bad_bags_are_skipped_with_a_reason(tmp_path):
    # unknown topics only
    with BagWriter(tmp_path / "a", prefix="unknown") as w:
        w.write("/foo", FLOAT64, encode_float64(1.0), T0)
        w.write("/bar", FLOAT64_MULTI_ARRAY, encode_float64_multiarray([("obs", 2)], [1.0, 2.0]), T0 + 1)
    bag = closed_bags(tmp_path / "a")[0]
    with pytest.raises(BagSkipped) as info:
        read_records(bag)
    assert info.value.path == bag and str(bag) in str(info.value)
    assert "no transition records" in info.value.reason and "/bar" in info.value.reason
    with pytest.raises(BagSkipped, match="none of the topics"):
        read_records(bag, topics=["/tdmpc2/transition"])
    with BagWriter(tmp_path / "b", prefix="only_ints") as w:
        w.write("/episode", INT64, encode_int64(3), T0)
    with pytest.raises(BagSkipped, match="no transition-record topic.*/episode"):
        read_records(closed_bags(tmp_path / "b")[0])

    # raw topics without rewards: the topic absent, or present with no messages
    bag, _, low, high = write_raw_bag(tmp_path / "c", np.random.default_rng(11), rewards=False)
    with pytest.raises(BagSkipped, match="no rewards: topic /reward holds no messages") as info:
        episodes_from_raw(bag, "/obs", "/cmd", "/reward", "/episode", action_low=low, action_high=high)
    assert info.value.path == bag
    with pytest.raises(BagSkipped, match="no rewards: topic /rewards is not in the bag"):
        episodes_from_raw(bag, "/obs", "/cmd", "/rewards", action_low=low, action_high=high)
    with pytest.raises(BagSkipped, match="expected std_msgs/msg/Float64 or std_msgs/msg/Float64MultiArray"):
        episodes_from_raw(bag, "/obs", "/cmd", "/episode", action_low=low, action_high=high)
    with pytest.raises(BagSkipped, match=r"rewards topic /obs is std_msgs/msg/Float64MultiArray, but none of its "
                                         r"messages is a stamped reward \(segments reward \[1\], stamp \[2\]\)"):
        episodes_from_raw(bag, "/obs", "/cmd", "/obs", action_low=low, action_high=high)

    # truncated and missing files
    rng = np.random.default_rng(12)
    for storage in ("mcap", "sqlite3"):
        with BagWriter(tmp_path / storage, storage=storage) as w:
            write_all(w, make_episode(rng, 0, 300))
        bag = closed_bags(tmp_path / storage)[0]
        assert len(read_records(bag)) == 300
        data_file = next(p for p in bag.iterdir() if p.name != "metadata.yaml")
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
        with pytest.raises(BagSkipped, match="unreadable") as info:
            read_records(bag)
        assert info.value.path == bag
    gone = tmp_path / "gone"
    with pytest.raises(BagSkipped, match="does not exist"):
        read_records(gone)
    (tmp_path / "notabag").mkdir()
    with pytest.raises(BagSkipped, match="no metadata.yaml"):
        read_records(tmp_path / "notabag")


def test_malformed_records_are_counted_not_fatal(tmp_path):
    rng = np.random.default_rng(13)
    good = make_episode(rng, 0, 10)
    with BagWriter(tmp_path) as w:
        write_all(w, good)
        # a record without its reward segment, and bytes that are no Float64MultiArray at all
        dims, data = good[0].pack()
        bad_dims = [(lb, s) for lb, s in dims if lb != "reward"]
        bad = np.delete(data, 2 + OBS + ACT)
        w.write("/tdmpc2/transition", FLOAT64_MULTI_ARRAY, encode_float64_multiarray(bad_dims, bad), T0 + 10**9)
        w.write("/tdmpc2/transition", FLOAT64_MULTI_ARRAY, b"\x00\x01\x00\x00\xff\xff", T0 + 10**9 + 1)
    bag = closed_bags(tmp_path)[0]
    records = read_record_arrays(bag, topics=["/tdmpc2/transition"])
    assert len(records) == 10 and records.dropped == {"not_a_record": 1, "undecodable": 1}
    assert len(read_record_arrays(bag)) == 10  # auto-detect ignores what is not a record


# --- ledger ----------------------------------------------------------------------------------------
def test_ledger_survives_restart(tmp_path):
    rng = np.random.default_rng(14)
    bags_dir = tmp_path / "bags"
    with BagWriter(bags_dir, split_size_bytes=1) as w:  # one bag per message
        write_all(w, make_episode(rng, 0, 3))
    bags = closed_bags(bags_dir)
    assert len(bags) == 3
    ledger = IngestLedger(tmp_path / "ledger.jsonl")
    assert ledger.pending(bags_dir) == bags
    ledger.mark(bags[0], transitions=1, episodes=1)
    ledger.mark(bags[1], status="skipped", reason="no rewards")
    # restart: a new instance reads what the old one wrote; a torn last line is ignored
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"bag": "half-writ')
    again = IngestLedger(tmp_path / "ledger.jsonl")
    assert again.torn_lines == 1 and len(again) == 2
    assert again.is_ingested(bags[0]) and again.is_ingested(bags[1]) and not again.is_ingested(bags[2])
    assert again.entry(bags[1])["reason"] == "no rewards" and again.entry(bags[0])["transitions"] == 1
    assert again.pending(bags_dir) == [bags[2]]
    again.mark(bags[2], transitions=1)
    third = IngestLedger(tmp_path / "ledger.jsonl")
    assert third.torn_lines == 1 and third.pending(bags_dir) == []
    # a different bag under an ingested name is ingested again
    shutil.rmtree(bags[0])
    w2 = BagWriter(tmp_path / "other", prefix="x")
    write_all(w2, make_episode(rng, 5, 2))
    shutil.move(str(w2.close()), str(bags[0]))
    assert not IngestLedger(tmp_path / "ledger.jsonl").is_ingested(bags[0])


def test_closed_bags_are_listed_oldest_first_past_bag_9999(tmp_path):
    """A recorder splitting every minute reaches bag _10000 in a week: it is listed after _9999, not
    first (plain string order)."""
    for name in ["tdmpc2_20261206T120000Z_10000", "tdmpc2_20261206T120000Z_9999", "tdmpc2_20261206T120000Z_0002",
                 "tdmpc2_20261207T080000Z_0000", ".tdmpc2_20261207T080000Z_0001.partial"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert [b.name for b in closed_bags(tmp_path)] == [
        "tdmpc2_20261206T120000Z_0002", "tdmpc2_20261206T120000Z_9999", "tdmpc2_20261206T120000Z_10000",
        "tdmpc2_20261207T080000Z_0000"]


def test_a_clock_that_goes_back_closes_the_open_bag(tmp_path):
    """A sim restarted under use_sim_time starts its clock again: the bag begun before is closed
    (complete, in time order) instead of staying open until the new clock catches up with it, with
    or without a split duration. Messages a few ms out of order (header stamps) stay in one bag."""
    rng = np.random.default_rng(7)
    first, second = make_episode(rng, 0, 10), make_episode(rng, 1, 10)
    for duration in (60.0, None):
        folder = tmp_path / f"d{duration}"
        w = BagWriter(folder, split_duration_s=duration)
        write_all(w, first, start=5_000 * 10**9)
        w.write("/late", FLOAT64, encode_float64(1.0), 5_000 * 10**9 - 3_000_000)  # 3 ms early: same bag
        assert w.roll_if_due(5_000 * 10**9 + 10**9) is None  # on the same clock, a second on: still open
        write_all(w, second, start=2 * 10**9)  # the clock restarted
        assert len(closed_bags(folder)) == 1 and w.current is not None
        assert w.roll_if_due(10**9 // 2) is not None  # and once more, past the new bag's first message
        w.close()
        bags = closed_bags(folder)
        assert [len(read_records(b)) for b in bags] == [10, 10]
        with Reader(bags[0]) as r:
            assert r.message_count == 11
