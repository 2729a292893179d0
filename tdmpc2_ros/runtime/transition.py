"""Labelled segments of a flat float array: the sim's step message and the planner's transition record.

Both travel as std_msgs/Float64MultiArray, the only standard message that holds a vector of any
length. Each segment is one layout dimension whose label names it and whose size is its length, in
data order, so any subscriber (or `ros2 topic echo`) can read them without this package. A
dimension of size 0 carries a tag in its label, e.g. "model:ab12cd34ef56".

Step message (sim_node -> observation topic), modelled on dm_env's TimeStep:
    obs [n] | reward [1] | applied_action [m] | episode [1] | step [1] | last [1]
  `reward` and `applied_action` are those of the control step that produced `obs` (NaN and the
  zero command at step 0), `step` counts control steps within `episode`, `last` is 1 on the final
  observation of an episode. Because o_{t+1}, r_t and a_t travel in one message, a transition is
  paired exactly, never by arrival time. Optional segments: `terminated` [1] (a task that can fail),
  and `commands` [1] from a sim that takes each command at the next physics step: how many different
  commands the step applied. A step that applied 2 or more was produced by no single action, so it
  makes no transition record.

Transition record (planner_node -> transition topic), one per executed control step:
    episode [1] | step [1] | obs [n] | action [m] | reward [1] | next_obs [n] | terminated [1] | truncated [1]
  `obs` is what the planner fed the model at step `step`, `action` the normalised action in [-1, 1]
  that the robot applied, `reward` what followed, `next_obs` the next model input.

Pure numpy: no ROS, no torch (the recorder, the trainer and tests share it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_SEGMENTS = ("obs", "reward", "applied_action", "episode", "step", "last")
RECORD_SEGMENTS = ("episode", "step", "obs", "action", "reward", "next_obs", "terminated", "truncated")
TAG_SEP = ":"


class SegmentError(ValueError):
    """A message's layout does not describe its data, or lacks a segment that is required."""


def pack(segments: list[tuple[str, np.ndarray]], tags: dict[str, str] | None = None):
    """-> (dims [(label, size)], data float64). Tags become size-0 dims labelled 'key:value'."""
    arrays = [np.asarray(v, np.float64).reshape(-1) for _, v in segments]
    dims = [(name, a.shape[0]) for (name, _), a in zip(segments, arrays)]
    dims += [(f"{k}{TAG_SEP}{v}", 0) for k, v in (tags or {}).items()]
    return dims, np.concatenate(arrays) if arrays else np.zeros(0)


def offsets(dims: list[tuple[str, int]]) -> tuple[dict[str, tuple[int, int]], dict[str, str], int]:
    """-> ({segment: (start, end)}, {tag: value}, total length) of a layout."""
    spans, tags, start = {}, {}, 0
    for label, size in dims:
        if size == 0 and TAG_SEP in label:
            key, _, value = label.partition(TAG_SEP)
            tags[key] = value
            continue
        spans[label] = (start, start + size)
        start += size
    return spans, tags, start


def unpack(dims: list[tuple[str, int]], data) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """-> ({segment: values}, {tag: value}); raises SegmentError if the sizes do not add up."""
    data = np.asarray(data, np.float64).reshape(-1)
    spans, tags, total = offsets(dims)
    if total != data.shape[0]:
        raise SegmentError(f"layout describes {total} values but the message holds {data.shape[0]} "
                           f"(dims {[d for d in dims]})")
    return {label: data[a:b] for label, (a, b) in spans.items()}, tags


def require(segments: dict, names, what: str):
    missing = [n for n in names if n not in segments]
    if missing:
        raise SegmentError(f"{what} lacks segment(s) {missing}; it has {sorted(segments)}")


@dataclass
class Transition:
    episode: int
    step: int
    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool = False
    truncated: bool = False
    model_version: str = ""

    def pack(self):
        segs = [("episode", [self.episode]), ("step", [self.step]), ("obs", self.obs), ("action", self.action),
                ("reward", [self.reward]), ("next_obs", self.next_obs), ("terminated", [float(self.terminated)]),
                ("truncated", [float(self.truncated)])]
        return pack(segs, {"model": self.model_version} if self.model_version else None)

    @classmethod
    def unpack(cls, dims, data) -> "Transition":
        s, tags = unpack(dims, data)
        require(s, RECORD_SEGMENTS, "transition record")
        if s["obs"].shape != s["next_obs"].shape:
            raise SegmentError(f"transition record obs has {s['obs'].shape[0]} values, next_obs {s['next_obs'].shape[0]}")
        return cls(int(s["episode"][0]), int(s["step"][0]), s["obs"].astype(np.float32), s["action"].astype(np.float32),
                   float(s["reward"][0]), s["next_obs"].astype(np.float32), bool(s["terminated"][0]),
                   bool(s["truncated"][0]), tags.get("model", ""))


class TransitionPairer:
    """Turns the stream of step messages a planner saw into transition records.

    Step k's message holds o_k together with the reward and applied action of step k-1 -> k, so a
    record (o_{k-1}, a_{k-1}, r_{k-1}, o_k) is emitted exactly when the previous message of the same
    episode was step k-1. Anything else (a lost best-effort message, a new episode) breaks the chain
    and is counted, never bridged. A step that applied more than one command (a `commands` segment
    over 1) is counted as mixed and makes no record; the chain goes on from it.
    """

    def __init__(self, normalise_action):
        self.normalise_action = normalise_action  # physical command -> [-1, 1]
        self.prev: tuple[int, int, np.ndarray, str] | None = None  # (episode, step, model input, version)
        self.emitted = self.gaps = self.mixed = 0

    def observe(self, segments: dict, model_input: np.ndarray, version: str) -> Transition | None:
        require(segments, ("reward", "applied_action", "episode", "step", "last"), "step message")
        episode, step = int(segments["episode"][0]), int(segments["step"][0])
        if self.prev is not None and (self.prev[0], self.prev[1]) == (episode, step):
            return None  # the same step again (a lockstep sim's republish)
        last = bool(segments["last"][0] >= 0.5)
        # A task that can fail (not dm_control's time limits) may say so in a "terminated" segment.
        terminated = bool(segments["terminated"][0] >= 0.5) if "terminated" in segments else False
        out = None
        follows = self.prev is not None and self.prev[0] == episode and step == self.prev[1] + 1
        if follows and "commands" in segments and segments["commands"][0] > 1:
            self.mixed += 1  # its applied_action names only the last command: not the step's action
        elif follows:
            out = Transition(episode, self.prev[1], self.prev[2], np.asarray(self.normalise_action(segments["applied_action"]), np.float32),
                             float(segments["reward"][0]), np.asarray(model_input, np.float32), terminated, last and not terminated,
                             self.prev[3])
            self.emitted += 1
        elif step > 0:
            self.gaps += 1  # the message before this one was not seen (or belonged to another episode)
        self.prev = None if last else (episode, step, np.asarray(model_input, np.float32), version)
        return out
