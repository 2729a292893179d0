"""Read transitions back from rosbag2 bags (MCAP or sqlite3) as episodes for ``ReplayBuffer.add_episode``.

Two sources:

1. **Transition records** (``/tdmpc2/transition``, std_msgs/Float64MultiArray in the record layout of
   ``tdmpc2_ros.runtime.transition``), as the planner publishes them and ``recorder_node`` records them.
   ``read_record_arrays`` decodes a bag into columns (``Records``), ``read_records`` into
   ``Transition`` objects, and ``episodes_from_arrays`` / ``episodes_from_records`` chain them into
   episodes. ``episodes_from_bag`` does both.

   Chaining never invents data. Record B follows record A only if they have the same episode id,
   ``B.step == A.step + 1``, ``B.obs`` is bitwise equal to ``A.next_obs`` (float64 as recorded), A is
   neither terminated nor truncated, and the link is unambiguous (exactly one candidate B, and no
   other record also claims B). Exact duplicate records (a topic recorded twice) are dropped first.
   Every maximal chain is one episode fragment ``(obs [T+1, n], action [T, m], reward [T],
   terminated [T])``; a gap (a lost record, a restart that reused episode ids, a model switch that
   changed the observation) therefore splits an episode instead of joining unrelated states.
   Fragments are returned in bag-time order of their first record.

2. **Raw topics** recorded with ``ros2 bag record`` around any other controller: ``episodes_from_raw``.
   Alignment rule, with ``tol = tolerance_s`` and observations o_k at bag times T_k (sorted):

   - a pair (o_k, o_{k+1}) is a candidate transition if both lie in the same episode and
     ``T_{k+1} - T_k <= max_obs_gap_s`` (default 1.5 x the median observation interval, so a lost
     observation is a gap, not a transition); if the observation message carries ``episode``/``step``
     segments (the sim's step message), ``step`` must also advance by exactly one;
   - its action a_k is the **last command in [T_k - tol, T_{k+1} - tol)**: a command sent in reply to
     o_k (or up to ``tol`` before it, for timestamp jitter) and early enough to have been applied
     before o_{k+1} was measured; a robot that holds the newest command applies exactly that one.
     These windows tile the time axis, so no command is used twice. Commands are in physical units
     and are mapped to [-1, 1] with ``action_low/high`` (then clipped, as the robot clips them);
   - its reward r_k is **the reward nearest T_{k+1}, within tol** (or ``reward_tolerance_s``, when
     given): the sim publishes the reward of a step just before the observation it produced, a robot's
     reward_node just after. A reward that would serve two pairs is ambiguous and both pairs are
     dropped;
   - a pair without such a command or reward is skipped and counted, as are commands and rewards
     that no transition used (``RawEpisodes.counts``). Consecutive kept pairs form a fragment.
   Episodes: the optional Int64 episode topic announces each episode just before its first
   observation; o_k belongs to the episode announced last at or before ``T_k + tol``. Without it,
   nothing tells a reset from a step, so pass the episode topic whenever the robot resets.
   ``terminated``: raw topics do not say whether an episode ended by termination, so it is 0, unless
   a ``termination`` expression (runtime/expressions.py) of ``obs``, the observation o_{k+1} after the
   step, is given: a pair where it is true is terminated and ends its fragment (the robot's reset is
   announced on the episode topic); one where it cannot be evaluated, or is NaN, is skipped and counted
   (``skipped_bad_termination``).

   **Paced by commands** (``pace="command"``), for observations faster than the control rate (a
   joint_state_broadcaster at the controller manager's 500 Hz beside a 50 Hz controller): there is an
   observation at each command C_k instead, **the newest at or before C_k** (the state in which c_k
   began to act), and T_k = C_k above. It must be fresh (at most 1.5 x the median observation
   interval, or tol, old), else the command is counted in ``commands_without_observation``; of
   commands that share one observation, the last is the one that acted, and it is the step's action
   a_k: the commands after it share o_{k+1}, so came after o_{k+1} was measured and played no part in
   it (the window rule above would take one of them where it came more than tol before C_{k+1}).
   The reward r_k is the one
   nearest the time o_{k+1} was measured (``reward_at="observation"``: a reward published with each
   observation), or nearest C_{k+1}, the command that ends the step (``reward_at="command"``:
   reward_node's ``pace: command`` scores o_{k+1} when that command arrives). With a broadcaster at
   twice the control rate o_{k+1} can be up to a whole broadcast period older than C_{k+1}, too far
   from reward_node's reward to match it by the observation's time.

   **Stamped rewards** (reward_node's ``stamped: true``: a Float64MultiArray holding the reward and the
   header stamp of the first source's message it scored, ``runtime/observations.py: STAMPED_REWARD``):
   a pair's reward, matched by time as above, must name o_{k+1}'s stamp, else the pair is skipped
   (``skipped_reward_of_another_observation``): never the reward of a neighbouring state. Paced by
   commands with ``reward_at="command"``, the observation at each command is the one its reward names
   (where the bag holds it and it is as fresh as above) instead of the newest the recorder heard
   before the command: where a joint state and a command come within a millisecond, reward_node and
   the recorder, two processes, may hear them in opposite orders, and the stamp says which one
   reward_node scored.

   A robot's own topics are read the way the planner reads them live: ``observation_sources`` takes
   the planner's sources (``runtime/observations.py``: JointState by joint name, Imu, Odometry,
   arrays), and the observation times T_k are those of the first source's topic, each observation
   assembled from the newest message of every source topic at or before T_k. ``command`` takes the
   planner's command format (``runtime/command_fields.py``): a JointTrajectory's first point or a
   JointState, by joint name.

Bad bags (missing, unfinished, truncated or unreadable files, no transition topic, no rewards, no
transition recoverable) raise ``BagSkipped(path, reason)``; ``str(e)`` is one line naming both.

Decoding is vectorised (``tdmpc2_ros.bags.cdr`` for std_msgs, ``tdmpc2_ros.bags.fields`` for a
robot's JointState, Imu, Odometry and JointTrajectory): per message only rosbags' own read loop runs in
Python. No ROS, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from tdmpc2_ros.bags.cdr import (
    FLOAT32_MULTI_ARRAY,
    FLOAT64,
    FLOAT64_MULTI_ARRAY,
    INT64,
    decode_float64_multiarrays,
    decode_float64s,
    decode_int64s,
    header_stamps,
)
from tdmpc2_ros.bags.fields import MessageColumns, array_source_blocks, command_columns, source_column
from tdmpc2_ros.runtime.observations import (
    PACES,
    REWARD_TIMES,
    STAMPED_REWARD,
    STAMPED_SOURCES,
    AdapterError,
    parse_source,
)
from tdmpc2_ros.runtime.transition import RECORD_SEGMENTS, SegmentError, Transition
from tdmpc2_ros.runtime.transition import offsets as layout_offsets

TRANSITION_TOPIC = "/tdmpc2/transition"
# The message type each observation source type (runtime/observations.py) and command type
# (runtime/command_fields.py) reads in a raw bag.
SOURCE_MSGTYPES = {"array": FLOAT64_MULTI_ARRAY, "array32": FLOAT32_MULTI_ARRAY,
                   "joint_state": "sensor_msgs/msg/JointState", "imu": "sensor_msgs/msg/Imu",
                   "odometry": "nav_msgs/msg/Odometry"}
ARRAY_SOURCES = ("array", "array32")
COMMAND_MSGTYPES = {"array": FLOAT64_MULTI_ARRAY, "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
                    "joint_state": "sensor_msgs/msg/JointState"}


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite32(values: np.ndarray) -> np.ndarray:
    """Finite, and still finite in the replay buffer's float32 (NaN compares False): a reading of 1e39
    is counted as malformed here rather than turning into Inf in the buffer (where the trainer's
    check would drop its whole episode)."""
    return np.abs(values) <= _FLOAT32_MAX


@dataclass(frozen=True)
class CommandFormat:
    """How a raw bag's commands are laid out: the planner's command_type / command_joints /
    command_interface (runtime/command_fields.py)."""

    kind: str = "array"
    joints: tuple = ()
    interface: str = "effort"


class BagSkipped(Exception):
    """A bag that yields no data; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), str(reason)
        super().__init__(f"{self.path}: {self.reason}")


class Episode(NamedTuple):
    """One episode fragment, in ``ReplayBuffer.add_episode(*episode)`` order (float32)."""

    obs: np.ndarray  # [T+1, obs_dim]
    action: np.ndarray  # [T, action_dim]
    reward: np.ndarray  # [T]
    terminated: np.ndarray  # [T]


# --- bag access --------------------------------------------------------------------------------
def _read_topics(bag_path, want) -> tuple[dict[str, str], dict[str, tuple[str, np.ndarray, list]]]:
    """-> ({topic: msgtype} of the whole bag, {topic: (msgtype, timestamps int64 sorted, raws)}) for
    the connections ``want(topic, msgtype)`` selects. Raises BagSkipped for anything unreadable."""
    from rosbags.rosbag2 import Reader

    path = Path(bag_path)
    if not path.exists():
        raise BagSkipped(path, "does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagSkipped(path, "no metadata.yaml (an unfinished bag, or not a rosbag2 folder)")
    try:
        with Reader(path) as reader:
            all_topics = {c.topic: c.msgtype for c in reader.connections}
            conns = [c for c in reader.connections if want(c.topic, c.msgtype)]
            buckets = {c.id: (c.topic, c.msgtype, [], []) for c in conns}
            if conns:
                for conn, ts, raw in reader.messages(connections=conns):
                    b = buckets[conn.id]
                    b[2].append(ts)
                    b[3].append(raw)
    except BagSkipped:
        raise
    except Exception as e:  # noqa: BLE001 — rosbags, sqlite, mcap, yaml or OS errors all mean "unreadable"
        raise BagSkipped(path, f"unreadable ({type(e).__name__}: {e})") from e
    out: dict[str, tuple[str, np.ndarray, list]] = {}
    for topic, msgtype, stamps, raws in buckets.values():
        if topic in out:  # the same topic under two connections (e.g. two QoS profiles): merge
            stamps = list(out[topic][1]) + stamps
            raws = out[topic][2] + raws
        ts = np.asarray(stamps, np.int64)
        order = np.argsort(ts, kind="stable")
        out[topic] = (msgtype, ts[order], [raws[i] for i in order])
    return all_topics, out


def _describe(topics: dict[str, str]) -> str:
    return ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"


# --- transition records ------------------------------------------------------------------------
@dataclass
class Records:
    """Transition records as columns (float64 as recorded), sorted by bag time."""

    episode: np.ndarray  # int64 [N]
    step: np.ndarray  # int64 [N]
    obs: np.ndarray  # float64 [N, obs_dim]
    action: np.ndarray  # float64 [N, action_dim]
    reward: np.ndarray  # float64 [N]
    next_obs: np.ndarray  # float64 [N, obs_dim]
    terminated: np.ndarray  # bool [N]
    truncated: np.ndarray  # bool [N]
    timestamp: np.ndarray  # int64 [N], bag time in ns (0 for records built from Transition objects)
    model_version: np.ndarray  # object [N] of str ("" if untagged)
    dropped: dict = field(default_factory=dict)  # reason -> number of messages not decoded

    def __len__(self) -> int:
        return int(self.episode.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.action.shape[1])

    def subset(self, index) -> "Records":
        return Records(*(getattr(self, f)[index] for f in _COLUMNS), dropped=dict(self.dropped))

    def to_transitions(self) -> list[Transition]:
        """Transition objects, as ``Transition.unpack`` would build them (float32 vectors)."""
        obs, action, next_obs = (a.astype(np.float32) for a in (self.obs, self.action, self.next_obs))
        return [Transition(e, s, o, a, r, no, te, tr, m) for e, s, o, a, r, no, te, tr, m in zip(
            self.episode.tolist(), self.step.tolist(), obs, action, self.reward.tolist(), next_obs,
            self.terminated.tolist(), self.truncated.tolist(), self.model_version.tolist())]

    @classmethod
    def from_transitions(cls, transitions: Sequence[Transition]) -> "Records":
        n = len(transitions)
        if n == 0:
            raise ValueError("no transitions")
        t = transitions
        return cls(np.fromiter((x.episode for x in t), np.int64, n), np.fromiter((x.step for x in t), np.int64, n),
                   np.stack([np.asarray(x.obs, np.float64).reshape(-1) for x in t]),
                   np.stack([np.asarray(x.action, np.float64).reshape(-1) for x in t]),
                   np.fromiter((x.reward for x in t), np.float64, n),
                   np.stack([np.asarray(x.next_obs, np.float64).reshape(-1) for x in t]),
                   np.fromiter((x.terminated for x in t), bool, n), np.fromiter((x.truncated for x in t), bool, n),
                   np.zeros(n, np.int64), np.array([x.model_version for x in t], dtype=object))


_COLUMNS = ("episode", "step", "obs", "action", "reward", "next_obs", "terminated", "truncated", "timestamp",
            "model_version")


def _record_columns(dims, data: np.ndarray) -> dict:
    """Slice a block of same-layout record messages into columns; SegmentError if not a record layout."""
    probe = Transition.unpack(list(dims), data[0])  # validates the layout exactly as subscribers do
    offsets, tags, _ = layout_offsets(list(dims))
    for name in ("episode", "step", "reward", "terminated", "truncated"):
        a, b = offsets[name]
        if b - a != 1:
            raise SegmentError(f"transition record segment {name!r} has {b - a} values, expected 1")
    col = {name: data[:, a:b] for name, (a, b) in offsets.items() if name in RECORD_SEGMENTS}
    k = data.shape[0]
    return {"episode": col["episode"][:, 0].astype(np.int64), "step": col["step"][:, 0].astype(np.int64),
            "obs": col["obs"], "action": col["action"], "reward": col["reward"][:, 0],
            "next_obs": col["next_obs"], "terminated": col["terminated"][:, 0] != 0,
            "truncated": col["truncated"][:, 0] != 0,
            "model_version": np.full(k, probe.model_version, dtype=object)}


def read_record_arrays(bag_path, topics: Sequence[str] | None = None) -> Records:
    """Every transition record in a bag, as columns sorted by bag time.

    ``topics``: the record topics to read; None reads every Float64MultiArray topic whose messages
    have the record layout (other Float64MultiArray topics, e.g. observations, are ignored).
    Messages that do not decode are counted in ``Records.dropped``; records whose observation or
    action size differs from the majority too (``"other_shape"``), and records holding NaN, Inf or a
    value beyond float32's range (``"non_finite"``: the replay buffer could not take them). Raises
    BagSkipped if the bag holds no record at all.
    """
    path = Path(bag_path)
    wanted = None if topics is None else set(topics)
    all_topics, data = _read_topics(path, lambda t, m: m == FLOAT64_MULTI_ARRAY and (wanted is None or t in wanted))
    if not data:
        what = "no transition-record topic" if wanted is None else f"none of the topics {sorted(wanted)}"
        raise BagSkipped(path, f"{what} (std_msgs/msg/Float64MultiArray); the bag has: {_describe(all_topics)}")
    dropped: dict[str, int] = {}
    parts: dict[tuple[int, int], list[dict]] = {}
    reasons: list[str] = []
    for topic, (_, stamps, raws) in data.items():
        blocks, errors = decode_float64_multiarrays(raws)
        if errors:
            dropped["undecodable"] = dropped.get("undecodable", 0) + len(errors)
            reasons.append(f"{topic}: {errors[0][1]}")
        for (dims, _), (values, index) in blocks.items():
            try:
                cols = _record_columns(dims, values)
            except SegmentError as e:
                if wanted is not None:  # an explicitly named record topic: count the misfits
                    dropped["not_a_record"] = dropped.get("not_a_record", 0) + len(index)
                    reasons.append(f"{topic}: {e}")
                continue
            cols["timestamp"] = stamps[index]
            shape = (cols["obs"].shape[1], cols["action"].shape[1])
            parts.setdefault(shape, []).append(cols)
    if not parts:
        why = f"; {reasons[0]}" if reasons else ""
        n = sum(len(v[2]) for v in data.values())
        raise BagSkipped(path, f"no transition records in {n} message(s) on {', '.join(sorted(data))}{why}")
    sizes = {shape: sum(len(c["episode"]) for c in cs) for shape, cs in parts.items()}
    best = max(sizes, key=sizes.get)
    other = sum(n for shape, n in sizes.items() if shape != best)
    if other:
        dropped["other_shape"] = other
    cols = {name: np.concatenate([c[name] for c in parts[best]]) for name in _COLUMNS}
    finite = np.all([_finite32(cols[name].reshape(len(cols["episode"]), -1)).all(axis=1)
                     for name in ("obs", "action", "reward", "next_obs")], axis=0)
    if not finite.all():  # a chain breaks here instead of carrying NaN or Inf into an episode
        dropped["non_finite"] = int((~finite).sum())
    order = np.argsort(cols["timestamp"][finite], kind="stable")
    return Records(**{name: cols[name][finite][order] for name in _COLUMNS}, dropped=dropped)


def read_records(bag_path, topics: Sequence[str] | None = None) -> list[Transition]:
    """Every transition record in a bag as ``Transition`` objects, in bag-time order."""
    return read_record_arrays(bag_path, topics).to_transitions()


def _row_keys(*columns: np.ndarray) -> np.ndarray:
    """One opaque bytes key per row of the given columns (bitwise float64 comparison)."""
    n = columns[0].shape[0]
    mat = np.ascontiguousarray(np.concatenate([np.asarray(c, np.float64).reshape(n, -1) for c in columns], axis=1))
    return mat.view(np.dtype((np.void, mat.shape[1] * 8))).reshape(n)


def episodes_from_arrays(records: Records, min_transitions: int = 1) -> list[Episode]:
    """Chain records into episode fragments (rule in the module docstring); fragments with fewer
    than ``min_transitions`` transitions are dropped."""
    n = len(records)
    if n == 0:
        return []
    r = records
    full = _row_keys(r.episode, r.step, r.obs, r.action, r.reward, r.next_obs, r.terminated, r.truncated)
    _, first = np.unique(full, return_index=True)
    if first.shape[0] < n:  # exact duplicates: keep the first of each
        r = r.subset(np.sort(first))
        n = len(r)
    start_keys = _row_keys(r.episode, r.step, r.obs)
    next_keys = _row_keys(r.episode, r.step + 1, r.next_obs)
    uniq, inverse = np.unique(np.concatenate([start_keys, next_keys]), return_inverse=True)
    inverse = inverse.reshape(-1)
    id_start, id_next = inverse[:n], inverse[n:]
    count = np.bincount(id_start, minlength=uniq.shape[0])
    owner = np.full(uniq.shape[0], -1, np.int64)
    owner[id_start] = np.arange(n)
    link = (count[id_next] == 1) & ~r.terminated & ~r.truncated
    succ = np.where(link, owner[id_next], -1)
    claims = np.bincount(succ[link], minlength=n)
    link &= claims[np.maximum(succ, 0)] == 1
    succ[~link] = -1
    has_pred = np.zeros(n, bool)
    has_pred[succ[link]] = True

    obs32, next32 = r.obs.astype(np.float32), r.next_obs.astype(np.float32)
    action32, reward32 = r.action.astype(np.float32), r.reward.astype(np.float32)
    term32 = r.terminated.astype(np.float32)
    nxt = succ.tolist()
    episodes = []
    for head in np.flatnonzero(~has_pred).tolist():
        chain = [head]
        while (j := nxt[chain[-1]]) >= 0:
            chain.append(j)
        if len(chain) < min_transitions:
            continue
        idx = np.asarray(chain)
        episodes.append(Episode(np.concatenate([obs32[idx], next32[idx[-1:]]]), action32[idx], reward32[idx],
                                term32[idx]))
    return episodes


def episodes_from_records(transitions: Sequence[Transition], min_transitions: int = 1) -> list[Episode]:
    """Chain ``Transition`` objects (any order, any number of bags) into episode fragments."""
    if not transitions:
        return []
    return episodes_from_arrays(Records.from_transitions(transitions), min_transitions)


def episodes_from_bag(bag_path, topics: Sequence[str] | None = None, min_transitions: int = 1) -> list[Episode]:
    """``episodes_from_arrays(read_record_arrays(bag_path, topics))``. Raises BagSkipped."""
    return episodes_from_arrays(read_record_arrays(bag_path, topics), min_transitions)


# --- raw topics --------------------------------------------------------------------------------
@dataclass
class RawEpisodes:
    """What ``episodes_from_raw`` recovered, and what it skipped."""

    episodes: list[Episode]
    counts: dict  # observations, pairs, transitions, skipped_*, unmatched_*, malformed_*, clipped_commands
    # (position, return) of each message on the episode-return topic, when one was asked for: the
    # number of this bag's transitions (in episode order) that ended at or before it, and its value.
    returns: list = field(default_factory=list)

    @property
    def transitions(self) -> int:
        return int(sum(e.action.shape[0] for e in self.episodes))


def _observation_columns(raws) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Observation messages -> (obs [K, n] float64, episode [K] float (NaN = none), step [K] float,
    kept index [K], malformed count). Uses the 'obs' segment when the layout labels one."""
    blocks, errors = decode_float64_multiarrays(raws)
    by_dim: dict[int, list] = {}
    bad = len(errors)
    for (dims, _), (values, index) in blocks.items():
        offsets, _, start = layout_offsets(list(dims))
        if start != values.shape[1]:
            bad += len(index)
            continue
        a, b = offsets.get("obs", (0, values.shape[1]))
        k = len(index)

        def scalar(name):  # a one-value segment (the sim's step message has 'episode' and 'step')
            lo, hi = offsets.get(name, (0, 0))
            return values[:, lo] if hi - lo == 1 else np.full(k, np.nan)

        ep, st = scalar("episode"), scalar("step")
        by_dim.setdefault(b - a, []).append((values[:, a:b], ep, st, index))
    if not by_dim:
        return np.zeros((0, 0)), np.zeros(0), np.zeros(0), np.zeros(0, np.int64), bad
    sizes = {d: sum(len(p[3]) for p in ps) for d, ps in by_dim.items()}
    best = max(sizes, key=sizes.get)
    bad += sum(v for d, v in sizes.items() if d != best)
    ps = by_dim[best]
    obs, ep, st, index = (np.concatenate([p[i] for p in ps]) for i in range(4))
    order = np.argsort(index, kind="stable")
    obs, ep, st, index = obs[order], ep[order], st[order], index[order]
    finite = _finite32(obs).all(axis=1)
    bad += int((~finite).sum())
    return obs[finite], ep[finite], st[finite], index[finite], bad


def episodes_from_raw(bag_path, obs_topic: str, command_topic: str, reward_topic: str,
                      episode_topic: str | None = None, *, action_low, action_high, tolerance_s: float = 0.005,
                      max_obs_gap_s: float | None = None, min_transitions: int = 1,
                      observation_sources: Sequence[str] = (), command: CommandFormat = CommandFormat(),
                      reward_tolerance_s: float | None = None, return_topic: str | None = None,
                      pace: str = "observation", termination=None, reward_at: str = "observation") -> RawEpisodes:
    """Rebuild transitions from raw observation / command / reward topics by bag timestamps.

    observations: std_msgs/Float64MultiArray on obs_topic ('obs' segment if labelled, else all data),
    or, with `observation_sources`, the planner's sources (runtime/observations.py: JointState, Imu,
    Odometry, arrays, on one topic or several): an observation at each message of the first source's
    topic, from the latest message of every source topic at or before it, as the planner assembles
    one at a tick;
    commands: `command` (Float64MultiArray by default, or JointTrajectory / JointState by joint name)
    in physical units within [action_low, action_high];
    rewards: std_msgs/Float64, or reward_node's stamped Float64MultiArray (module docstring), matched
    within `reward_tolerance_s` (None = tolerance_s); episode_topic: std_msgs/Int64 (optional). Rule:
    module docstring. return_topic (optional, std_msgs/Float64): the
    robot's episode returns (reward_node's), placed among the transitions for a learning curve
    (RawEpisodes.returns); a bag without them is read all the same. pace: "observation" (a transition
    per pair of observations) or "command" (per pair of commands, for observations faster than them).
    reward_at (pace "command" only): "observation" or "command", the time a reward is matched to.
    termination (an ``Expression`` of obs, optional): the rule of the module docstring.
    Raises BagSkipped if a topic is missing or empty, or no transition can be aligned.
    """
    path = Path(bag_path)
    low = np.asarray(action_low, np.float64).reshape(-1)
    high = np.asarray(action_high, np.float64).reshape(-1)
    if low.shape != high.shape or low.size == 0 or not np.all(high > low):
        raise ValueError(f"action_low {low.tolist()} / action_high {high.tolist()} must be non-empty, of equal "
                         f"length, with high > low")
    reward_tolerance_s = tolerance_s if reward_tolerance_s is None else reward_tolerance_s
    if pace not in PACES:
        raise ValueError(f"pace {pace!r} is not one of {', '.join(PACES)}")
    if reward_at not in REWARD_TIMES or (reward_at == "command" and pace != "command"):
        raise ValueError(f"reward_at {reward_at!r}: expected one of {', '.join(REWARD_TIMES)}, and 'command' only "
                         f"with pace 'command'")
    if not tolerance_s > 0 or not reward_tolerance_s > 0:
        raise ValueError(f"tolerance_s and reward_tolerance_s must be > 0 (got {tolerance_s}, {reward_tolerance_s})")
    try:
        sources = [parse_source(text) for text in observation_sources]
    except AdapterError as e:
        raise ValueError(str(e)) from None
    names = {s.topic: "observations" for s in sources} or {obs_topic: "observations"}
    expected = {s.topic: SOURCE_MSGTYPES[s.kind] for s in sources} or {obs_topic: FLOAT64_MULTI_ARRAY}
    names.update({command_topic: "commands", reward_topic: "rewards"})
    expected.update({command_topic: COMMAND_MSGTYPES[command.kind], reward_topic: (FLOAT64, FLOAT64_MULTI_ARRAY)})
    if episode_topic:
        expected[episode_topic] = INT64
        names[episode_topic] = "episodes"
    data = _read_expected_topics(path, expected, names, optional=episode_topic, extra=return_topic)
    tol = int(round(tolerance_s * 1e9))
    counts: dict[str, int] = {}

    if sources:
        obs, kept, counts["malformed_observations"] = _source_observations(data, sources, counts)
        obs_ep = obs_step = np.full(obs.shape[0], np.nan)
    else:
        obs, obs_ep, obs_step, kept, counts["malformed_observations"] = _observation_columns(data[obs_topic][2])
    first_topic = sources[0].topic if sources else obs_topic
    t_obs = data[first_topic][1][kept]
    counts["observations"] = obs.shape[0]
    actions, t_cmd = _command_columns(data[command_topic], low, high, counts, command)
    rew, t_rew, rew_stamps = _reward_columns(data[reward_topic], counts)
    obs_stamps = None
    if rew_stamps is not None:
        if not rew.size:
            raise BagSkipped(path, f"rewards topic {reward_topic} is {FLOAT64_MULTI_ARRAY}, but none of its messages is "
                                   f"a stamped reward (segments {', '.join(f'{n} [{k}]' for n, k in STAMPED_REWARD)})")
        if not sources or sources[0].kind not in STAMPED_SOURCES:
            raise BagSkipped(path, f"the rewards on {reward_topic} are stamped, but the observations' first topic "
                                   f"{first_topic} has no header stamp to match them to")
        stamps, ok = header_stamps(data[first_topic][2])
        obs_stamps = np.where(ok, stamps, -1)[kept]  # -1: no stamp, matched by no reward
    if t_obs.size > 2 and t_cmd.size > 2:
        # A transition per observation assumes observations at the control rate. A first source that
        # is faster (a joint_state_broadcaster at the controller manager's 500 Hz) gives pairs a few
        # ms apart, most with no command: the trainer warns of it unless paced by commands.
        counts["observations_per_command"] = round(float(np.median(np.diff(t_cmd)) / max(np.median(np.diff(t_obs)), 1)), 1)
        # About 1 where a reward comes at each command (reward_node's pace "command"): see reward_at.
        counts["rewards_per_command"] = round(t_rew.size / t_cmd.size, 2)
    if episode_topic and episode_topic in data and data[episode_topic][2]:
        _, t_ep, ep_raws = data[episode_topic]
        _, ep_ok = decode_int64s(ep_raws)
        # An observation belongs to the episode of the last episode message at or before it.
        episode = np.searchsorted(t_ep[ep_ok], t_obs + tol, side="right").astype(np.float64)
    elif obs.shape[0] and np.isfinite(obs_ep).all():
        episode = obs_ep  # the sim's step messages carry their episode
    else:
        episode = np.zeros(obs.shape[0])
    t_measured = t_obs  # when each observation was taken: its rewards are matched to it
    tol_rew = int(round(reward_tolerance_s * 1e9))
    if pace == "command":
        named = None  # with stamped rewards at the commands: the observation each command's reward scored
        if obs_stamps is not None and reward_at == "command":
            named = _observations_named(obs_stamps, t_cmd, t_rew, rew_stamps, tol_rew)
        rows, at = _observations_at_commands(t_obs, t_cmd, tol, counts, named)
        t_measured, t_obs = t_obs[rows], t_cmd[at]
        obs, episode, obs_step = obs[rows], episode[rows], obs_step[rows]
        obs_stamps = None if obs_stamps is None else obs_stamps[rows]
        if reward_at == "command":
            t_measured = t_obs  # each pair's end: the command that ends the step, when reward_node scored it

    valid, ci, ri = _align_pairs(t_obs, episode, obs_step, t_cmd, t_rew, tol, tol_rew, max_obs_gap_s, counts,
                                 t_measured, at if pace == "command" else None,
                                 None if obs_stamps is None else (obs_stamps, rew_stamps))
    terminated = _terminations(termination, obs, valid, counts)
    _count_unused(valid, ci, ri, t_cmd.size, t_rew.size, counts)
    if not counts["transitions"]:
        detail = ", ".join(f"{key}={v}" for key, v in counts.items() if v)
        raise BagSkipped(path, f"no transition could be aligned within {tolerance_s:g} s ({detail})")
    episodes, kept = _fragments(obs, actions, rew, valid, ci, ri, min_transitions, terminated)
    returns = []
    if return_topic and return_topic in data and data[return_topic][0] == FLOAT64:
        values, t_ret, _ = _reward_columns(data[return_topic], {})
        ends = t_obs[1:][kept]  # when each kept transition's next observation came, in episode order
        returns = list(zip(np.searchsorted(ends, t_ret, side="right").tolist(), values.astype(float).tolist()))
    counts["episode_returns"] = len(returns)
    return RawEpisodes(episodes, counts, returns)


def _read_expected_topics(path: Path, expected: dict, names: dict, optional: str | None, extra: str | None = None):
    """The bag's messages on the expected topics, each as (type, times, raw messages). A topic that is
    missing, of another type, or empty (except `optional`) skips the bag, naming the topic. `extra` is
    read too, if the bag has it, unchecked."""
    all_topics, data = _read_topics(path, lambda t, m: t in expected or t == extra)
    for topic, msgtype in expected.items():
        what = names[topic]
        if topic not in all_topics:
            raise BagSkipped(path, f"no {what}: topic {topic} is not in the bag (it has: {_describe(all_topics)})")
        allowed = (msgtype,) if isinstance(msgtype, str) else msgtype
        if all_topics[topic] not in allowed:
            raise BagSkipped(path, f"{what} topic {topic} is {all_topics[topic]}, expected {' or '.join(allowed)}")
        if (topic not in data or not data[topic][2]) and topic != optional:
            raise BagSkipped(path, f"no {what}: topic {topic} holds no messages")
    return data


def _source_observations(data, sources, counts: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """Observations from the planner's sources: one at each message of the first source's topic, from
    the latest message of each source topic at or before it -> (obs [K, n], index of each one's first
    source message [K], malformed).
    An observation before every topic has spoken is counted in `observations_before_all_topics`."""
    topics = list(dict.fromkeys(s.topic for s in sources))
    times = data[sources[0].topic][1]
    latest = {t: np.searchsorted(data[t][1], times, side="right") - 1 for t in topics}
    early = np.any([latest[t] < 0 for t in topics], axis=0)
    columns = {t: MessageColumns(data[t][2], data[t][0]) for t in topics if any(
        s.topic == t and s.kind not in ARRAY_SOURCES for s in sources)}
    parts = []
    for s in sources:
        values = (_array_source(data[s.topic], s, latest[s.topic][~early]) if s.kind in ARRAY_SOURCES
                  else source_column(columns[s.topic], s).reshape(-1, 1))
        parts.append(values[np.maximum(latest[s.topic], 0)])
    rows = np.concatenate(parts, axis=1)
    good = ~early & _finite32(rows).all(axis=1)
    counts["observations_before_all_topics"] = int(early.sum())
    return rows[good], np.flatnonzero(good), int((~early).sum() - good.sum())


def _array_source(topic_data, source, used: np.ndarray) -> np.ndarray:
    """An array source's elements in each message [n, width], NaN where a message lacks them or
    differs in width from the first `used` message that has them (a robot's arrays keep their width)."""
    msgtype, _, raws = topic_data
    used = np.unique(used)
    blocks = array_source_blocks(raws, source, msgtype)
    used_in = [(index[np.isin(index, used)], values.shape[1]) for values, index in blocks]  # indices ascend
    width = min(((int(i[0]), w) for i, w in used_in if i.size), default=(0, 1))[1]
    out = np.full((len(raws), width), np.nan)
    for values, index in blocks:
        if values.shape[1] == width:
            out[index] = values
    return out


def _typed_commands(raws, msgtype: str, command: CommandFormat) -> tuple[np.ndarray, np.ndarray, int]:
    """JointTrajectory / JointState commands -> (values [C, m] in command.joints order, index [C],
    malformed count)."""
    values = command_columns(MessageColumns(raws, msgtype), command.kind, command.joints, command.interface)
    ok = np.isfinite(values).all(axis=1)
    return values[ok], np.flatnonzero(ok), int((~ok).sum())


def _command_columns(topic_data, low: np.ndarray, high: np.ndarray, counts: dict,
                     command: CommandFormat = CommandFormat()) -> tuple[np.ndarray, np.ndarray]:
    """Command messages -> (actions normalised to [-1, 1] [C, m], times [C]), in bag order. Commands
    of another width or holding NaN/Inf are counted as malformed; ones beyond the bounds are clipped
    and counted."""
    msgtype, t_cmd_all, cmd_raws = topic_data
    if command.kind == "array":
        blocks, errors = decode_float64_multiarrays(cmd_raws)
        bad_cmd = len(errors)
    else:
        values, index, bad_cmd = _typed_commands(cmd_raws, msgtype, command)
        blocks = {(): (values, index)}
    cmd_parts = []
    for values, index in blocks.values():
        if values.shape[1] != low.size:
            bad_cmd += len(index)
            continue
        cmd_parts.append((values, index))
    if cmd_parts:
        cmd = np.concatenate([p[0] for p in cmd_parts])
        cidx = np.concatenate([p[1] for p in cmd_parts])
        order = np.argsort(cidx, kind="stable")
        cmd, cidx = cmd[order], cidx[order]
        finite = np.isfinite(cmd).all(axis=1)
        bad_cmd += int((~finite).sum())
        cmd, cidx = cmd[finite], cidx[finite]
    else:
        cmd, cidx = np.zeros((0, low.size)), np.zeros(0, np.int64)
    actions = (2.0 * cmd - (high + low)) / (high - low)
    counts["malformed_commands"] = bad_cmd
    counts["clipped_commands"] = int((np.abs(actions) > 1.0 + 1e-9).any(axis=1).sum())
    return np.clip(actions, -1.0, 1.0), t_cmd_all[cidx]


def _reward_columns(topic_data, counts: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reward messages -> (rewards [R], times [R], stamps [R] in ns or None): std_msgs/Float64, or the
    stamped Float64MultiArray (STAMPED_REWARD). Malformed or non-finite ones are counted and dropped."""
    msgtype, t_rew_all, rew_raws = topic_data
    stamps = None
    if msgtype == FLOAT64:
        rew, ok = decode_float64s(rew_raws)
    else:
        rew, stamps = np.zeros(len(rew_raws)), np.full(len(rew_raws), -1, np.int64)
        ok = np.zeros(len(rew_raws), bool)
        blocks, _ = decode_float64_multiarrays(rew_raws)
        for (dims, _), (values, index) in blocks.items():
            offsets, _, width = layout_offsets(list(dims))
            if width != values.shape[1] or any(offsets.get(n, (0, 0))[1] - offsets.get(n, (0, 0))[0] != size
                                               for n, size in STAMPED_REWARD):
                continue  # not a stamped reward: malformed
            (r, _), (at, _) = offsets["reward"], offsets["stamp"]
            sec, nanosec = values[:, at], values[:, at + 1]
            whole = (np.isfinite(sec) & (sec == np.round(sec)) & (nanosec >= 0) & (nanosec < 1e9)
                     & (nanosec == np.round(nanosec)))
            sec, nanosec = np.where(whole, sec, 0).astype(np.int64), np.where(whole, nanosec, 0).astype(np.int64)
            rew[index], ok[index] = values[:, r], whole
            stamps[index] = np.where(whole, sec * 10**9 + nanosec, -1)
    ok &= _finite32(rew)
    counts["malformed_rewards"] = int((~ok).sum())
    return rew[ok], t_rew_all[ok], None if stamps is None else stamps[ok]


SKIP_REASONS = ("episode_boundary", "gap", "no_command", "no_reward", "ambiguous_reward")


def _observations_at_commands(t_obs, t_cmd, tol: int, counts: dict, named=None) -> tuple[np.ndarray, np.ndarray]:
    """Command pace (module docstring): an observation at each command, the newest at or before it, or
    the one `named` [C] (-1 = none) by its stamped reward. -> (observation rows, command indices), one
    per command kept; commands without a fresh observation are counted."""
    newest = np.searchsorted(t_obs, t_cmd, side="right") - 1
    if named is not None:
        newest = np.where(named >= 0, named, newest)
    period = float(np.median(np.diff(t_obs))) if t_obs.size > 1 else 0.0
    limit = max(1.5 * period, tol)
    age = t_cmd - t_obs[np.maximum(newest, 0)] if t_obs.size else np.zeros(t_cmd.size)
    # A named observation may reach the recorder a little after the command; never one older than the
    # previous command's (a step does not go back in time).
    fresh = np.flatnonzero((newest >= 0) & (np.abs(age) <= limit))
    fresh = fresh[newest[fresh] >= np.maximum.accumulate(newest[fresh])] if fresh.size else fresh
    counts["commands_without_observation"] = int(t_cmd.size - fresh.size)
    shared = newest[fresh]
    keep = fresh[np.append(shared[1:] != shared[:-1], True)]  # of commands sharing an observation, the last acted
    return newest[keep], keep


def _nearest(times: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of `at`, the index of the nearest of the sorted, non-empty `times` (the earlier on a
    tie) and how far it is."""
    hi = np.clip(np.searchsorted(times, at, side="left"), 0, times.size - 1)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = np.abs(times[lo] - at), np.abs(times[hi] - at)
    return np.where(d_hi < d_lo, hi, lo), np.minimum(d_lo, d_hi)


def _observations_named(obs_stamps, t_cmd, t_rew, rew_stamps, tol_rew: int) -> np.ndarray:
    """Stamped rewards at the commands: the observation row each command's reward (the nearest, within
    tol_rew) names by its stamp, -1 where none does. Of observations sharing a stamp (a republished
    state), the first."""
    named = np.full(t_cmd.size, -1, np.int64)
    if not (t_rew.size and obs_stamps.size):
        return named
    ri, distance = _nearest(t_rew, t_cmd)
    near = distance <= tol_rew
    stamps, first = np.unique(obs_stamps, return_index=True)
    at = np.clip(np.searchsorted(stamps, rew_stamps[ri]), 0, stamps.size - 1)
    found = near & (stamps[at] == rew_stamps[ri]) & (rew_stamps[ri] >= 0)
    named[found] = first[at[found]]
    return named


def _align_pairs(t_obs, episode, obs_step, t_cmd, t_rew, tol: int, tol_rew: int, max_obs_gap_s: float | None,
                 counts: dict, t_measured=None, commands=None, stamps=None):
    """The alignment rule of the module docstring, over every pair of consecutive observations
    (o_j, o_j+1). Returns (valid [K-1] bool, command index, reward index per pair) and counts every
    pair skipped, by reason (_count_unused counts the commands and rewards left over, once every reason
    is in). Times in ns; rewards are matched to t_measured (default t_obs), when the observations were taken.
    commands: paced by commands, each pair's own command index. stamps: (observation stamps, reward
    stamps) of stamped rewards, each pair's reward must name its o_{j+1}."""
    pairs = max(t_obs.size - 1, 0)
    counts["pairs"] = pairs
    if not pairs:
        valid, ci, ri = np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
        counts.update({f"skipped_{name}": 0 for name in SKIP_REASONS})
    else:
        t0, t1 = t_obs[:-1], t_obs[1:]
        dt = t1 - t0
        same = episode[:-1] == episode[1:]
        steps_known = np.isfinite(obs_step[:-1]) & np.isfinite(obs_step[1:])
        consecutive = ~steps_known | (obs_step[1:] == obs_step[:-1] + 1)
        if max_obs_gap_s is None:
            dts = dt[same & consecutive]
            max_gap = int(1.5 * np.median(dts)) if dts.size else 0
        else:
            max_gap = int(round(max_obs_gap_s * 1e9))
        in_time = (dt <= max_gap) & (dt > 0) & consecutive

        # command: the last one in [T_j - tol, T_{j+1} - tol)
        ci = np.searchsorted(t_cmd, t1 - tol, side="left") - 1
        has_cmd = (ci >= 0) & (t_cmd[np.maximum(ci, 0)] >= t0 - tol) if t_cmd.size else np.zeros(pairs, bool)
        if commands is not None:  # paced by commands: each step's own, c_k (module docstring)
            ci, has_cmd = commands[:-1], np.ones(pairs, bool)
        # reward: nearest to when o_{j+1} was taken, within tol_rew
        taken = t1 if t_measured is None else t_measured[1:]
        if t_rew.size:
            ri, distance = _nearest(t_rew, taken)
            has_rew = distance <= tol_rew
        else:
            ri, has_rew = np.zeros(pairs, np.int64), np.zeros(pairs, bool)

        valid = same & in_time & has_cmd & has_rew
        uses = np.bincount(ri[valid], minlength=max(t_rew.size, 1))
        ambiguous = valid & (uses[ri] > 1)  # one reward claimed by two pairs: neither is guessed
        valid &= ~ambiguous
        if stamps is not None:
            other = valid & (stamps[1][ri] != stamps[0][1:])  # a reward of another state than o_{j+1}
            counts["skipped_reward_of_another_observation"] = int(other.sum())
            valid &= ~other
        counts["skipped_episode_boundary"] = int((~same).sum())
        counts["skipped_gap"] = int((same & ~in_time).sum())
        counts["skipped_no_command"] = int((same & in_time & ~has_cmd).sum())
        counts["skipped_no_reward"] = int((same & in_time & has_cmd & ~has_rew).sum())
        counts["skipped_ambiguous_reward"] = int(ambiguous.sum())
    counts["transitions"] = int(valid.sum())
    return valid, ci, ri


def _count_unused(valid, ci, ri, n_commands: int, n_rewards: int, counts: dict) -> None:
    """The commands and rewards no kept pair used, once every reason to skip a pair has been applied."""
    counts["unmatched_commands"] = int(n_commands - np.unique(ci[valid]).size)
    counts["unmatched_rewards"] = int(n_rewards - np.unique(ri[valid]).size)


def _terminations(termination, obs, valid, counts: dict) -> np.ndarray:
    """terminated [K-1] of each pair: the termination expression on o_{k+1} (module docstring). A
    valid pair it cannot decide becomes invalid (in place) and is counted."""
    terminated = np.zeros(valid.shape[0], bool)
    if termination is None:
        return terminated
    bad = 0
    for j in np.flatnonzero(valid).tolist():
        try:
            terminated[j] = termination.finite_value(obs=obs[j + 1]) != 0.0
        except Exception:  # noqa: BLE001 — the expression is the user's: a step it cannot judge is not learned
            valid[j] = False
            bad += 1
    counts["skipped_bad_termination"], counts["terminations"] = bad, int(terminated.sum())
    counts["transitions"] -= bad
    return terminated


def _fragments(obs, actions, rew, valid, ci, ri, min_transitions: int,
               terminated=None) -> tuple[list[Episode], np.ndarray]:
    """Runs of consecutive valid pairs, each ended early by a terminated pair, as episodes (a run
    shorter than min_transitions is dropped), and the pairs they hold, in order."""
    terminated = np.zeros(valid.shape[0], bool) if terminated is None else terminated
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    obs32, act32, rew32 = obs.astype(np.float32), actions.astype(np.float32), rew.astype(np.float32)
    episodes, kept = [], []
    for run_a, run_b in zip(starts.tolist(), ends.tolist()):
        cuts = (np.flatnonzero(terminated[run_a:run_b]) + run_a + 1).tolist()
        for a, b in zip([run_a, *cuts], [*cuts, run_b]):
            if b - a < max(min_transitions, 1):
                continue
            episodes.append(Episode(obs32[a : b + 1], act32[ci[a:b]], rew32[ri[a:b]], terminated[a:b].astype(np.float32)))
            kept.append(np.arange(a, b))
    return episodes, np.concatenate(kept) if kept else np.zeros(0, np.int64)
