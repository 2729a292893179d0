"""Observation adapters: where a JointState, Imu, Odometry or Float32/64MultiArray becomes the
model's input vector.

Each observation source is one string (a ROS string-array parameter cannot hold dicts):

    <type>:<topic>:<field>[:<joint>]

    array:/tdmpc2/observation:obs            the segment labelled "obs" in the layout (the sim's step
                                             message: see tdmpc2_ros/runtime/transition.py); an
                                             array without layout dims is taken whole
    array:/some/topic:all                    every element of a Float64MultiArray
    array:/tdmpc2/observation:2-4            elements 2, 3, 4 (inclusive range) or a single index
    array32:/some/topic:0                    the same for Float32MultiArray
    joint_state:/joint_states:position:slider
    joint_state:/joint_states:cos(position):hinge_1     cos / sin of an angle (wrap-free encoding)
    joint_state:/joint_states:velocity:hinge_1
    imu:/imu:angular_velocity.z              orientation.{x,y,z,w}, angular_velocity.*, linear_acceleration.*
    odometry:/odom:twist.linear.x            pose.position.*, pose.orientation.*, twist.linear.*, twist.angular.*

The vector is the concatenation of the sources in order. Units are whatever the message carries
(REP-103: m, rad, s); nothing is rescaled here.

Messages are read by their fields only (duck typing), so the same sources read rclpy's messages in the
planner and the rosbags library's in the trainer (bags/reader.py: raw observation topics), and neither
side needs the other's: no ROS is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tdmpc2_ros.runtime.transition import SegmentError, unpack

SOURCE_TYPES = ("array", "array32", "joint_state", "imu", "odometry")
# What a step is, where observations come faster than the control rate (a 500 Hz joint_state_broadcaster):
# a message of the first source, or a command (the newest observation at it). reward_node and raw mode.
PACES = ("observation", "command")
# Paced by commands, where a step's reward comes: with the observation it scores (a reward published
# with each observation), or at the command that ends the step (reward_node's pace "command").
REWARD_TIMES = ("observation", "command")
# reward_node's stamped reward (``stamped: true``), a std_msgs/Float64MultiArray with these labelled
# segments: the reward and the header stamp (sec, nanosec) of the first source's message it scored, so
# the trainer pairs it with that observation exactly, whatever order two processes heard the topics in.
STAMPED_REWARD = (("reward", 1), ("stamp", 2))
# The source types whose messages carry a std_msgs/Header, and so a stamp a reward can name.
STAMPED_SOURCES = ("joint_state", "imu", "odometry")
_XYZ, _QUATERNION = ("x", "y", "z"), ("x", "y", "z", "w")
# The scalar float64 fields a source may name: the same set the planner reads live (extract) and the
# trainer reads from raw bags (bags/fields.py), so a bag can never train on what the robot cannot read.
FIELDS = {
    "imu": tuple(f"orientation.{c}" for c in _QUATERNION) + tuple(
        f"{v}.{c}" for v in ("angular_velocity", "linear_acceleration") for c in _XYZ),
    "odometry": tuple(f"pose.position.{c}" for c in _XYZ) + tuple(f"pose.orientation.{c}" for c in _QUATERNION)
    + tuple(f"twist.{v}.{c}" for v in ("linear", "angular") for c in _XYZ),
}
_TRANSFORMS = {"cos": math.cos, "sin": math.sin}


class AdapterError(ValueError):
    """A source string is malformed, or a message does not carry what a source asks for."""


@dataclass(frozen=True)
class Source:
    kind: str
    topic: str
    field: str
    joint: str = ""
    transform: str = ""  # "", "cos" or "sin"
    first: int = 0  # array sources: index range [first, last]; last = -1 means "to the end"
    last: int = 0
    label: str = ""  # array sources: take the layout segment with this label

    @property
    def spec(self) -> str:
        f = f"{self.transform}({self.field})" if self.transform else self.field
        return ":".join([self.kind, self.topic, f] + ([self.joint] if self.joint else []))


def parse_source(text: str) -> Source:
    parts = text.strip().split(":")
    if len(parts) < 3 or parts[0] not in SOURCE_TYPES:
        raise AdapterError(f"observation source {text!r} is not '<type>:<topic>:<field>[:<joint>]' with type in {SOURCE_TYPES}")
    kind, topic, field = parts[0], parts[1], parts[2]
    joint = parts[3] if len(parts) > 3 else ""
    if not topic.startswith("/") and not topic:
        raise AdapterError(f"observation source {text!r} has an empty topic")
    transform = ""
    if "(" in field:
        transform, _, inner = field.partition("(")
        field = inner.rstrip(")")
        if transform not in _TRANSFORMS:
            raise AdapterError(f"observation source {text!r}: unknown transform {transform!r} (cos, sin)")
    if kind in ("array", "array32"):
        if field == "all":
            return Source(kind, topic, field, first=0, last=-1)
        if field.isidentifier():
            return Source(kind, topic, field, first=0, last=-1, label=field)
        try:
            lo, _, hi = field.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise AdapterError(f"observation source {text!r}: array field must be 'all', a segment label, "
                               "an index or 'i-j'") from None
        if first < 0 or last < first:
            raise AdapterError(f"observation source {text!r}: bad index range {field}")
        return Source(kind, topic, field, first=first, last=last)
    if kind == "joint_state":
        if field not in ("position", "velocity", "effort") or not joint:
            raise AdapterError(f"observation source {text!r}: joint_state needs field position|velocity|effort and a joint name")
    elif field not in FIELDS[kind]:
        raise AdapterError(f"observation source {text!r}: {kind} field {field!r} is not one of {', '.join(FIELDS[kind])}")
    return Source(kind, topic, field, joint, transform)


def _attr_path(msg, path: str, spec: str) -> float:
    obj = msg
    for name in path.split("."):
        if not hasattr(obj, name):
            raise AdapterError(f"source {spec}: message {type(msg).__name__} has no field {path!r}")
        obj = getattr(obj, name)
    return float(obj)


def extract(source: Source, msg) -> np.ndarray:
    """The elements a source contributes, from its latest message."""
    if source.kind in ("array", "array32"):
        if source.label:
            return segment(msg, source.label, source.spec)
        data = np.asarray(msg.data, dtype=np.float64)
        last = data.shape[0] - 1 if source.last == -1 else source.last
        if last >= data.shape[0]:
            raise AdapterError(f"source {source.spec}: array has {data.shape[0]} elements, index {last} requested")
        return data[source.first : last + 1]
    if source.kind == "joint_state":
        names = list(msg.name)
        if source.joint not in names:
            raise AdapterError(f"source {source.spec}: joint {source.joint!r} not in JointState names {names}")
        values = getattr(msg, source.field)
        i = names.index(source.joint)
        if i >= len(values):
            raise AdapterError(f"source {source.spec}: JointState carries no {source.field} for {source.joint!r}")
        value = float(values[i])
    elif source.kind == "imu":
        value = _attr_path(msg, source.field, source.spec)
    else:  # odometry: pose.pose.* and twist.twist.* in the message
        section, _, rest = source.field.partition(".")
        value = _attr_path(msg, f"{section}.{section}.{rest}", source.spec)
    if source.transform:
        value = _TRANSFORMS[source.transform](value)
    return np.array([value])


def segments_of(msg) -> dict[str, np.ndarray]:
    """A Float(32|64)MultiArray's labelled segments (tdmpc2_ros.runtime.transition)."""
    return unpack([(d.label, d.size) for d in msg.layout.dim], msg.data)[0]


def segment(msg, label: str, spec: str) -> np.ndarray:
    if not msg.layout.dim:  # a plain array without a layout is taken whole
        return np.asarray(msg.data, dtype=np.float64)
    try:
        segs = segments_of(msg)
    except SegmentError as e:
        raise AdapterError(f"source {spec}: {e}") from None
    if label not in segs:
        raise AdapterError(f"source {spec}: the message has no segment labelled {label!r} (labels: {sorted(segs)})")
    return segs[label]


def source_width(source: Source) -> int | None:
    """Elements a source contributes, when known without a message (None for 'all')."""
    if source.kind in ("array", "array32"):
        return None if source.last == -1 else source.last - source.first + 1
    return 1


class ObservationAssembler:
    """Keeps the latest message of each topic and concatenates the sources into one vector."""

    def __init__(self, specs: list[str]):
        if not specs:
            raise AdapterError("no observation sources configured")
        self.sources = [parse_source(s) for s in specs]
        self.latest: dict[str, tuple[object, float]] = {}  # topic -> (message, receive time in s)

    @property
    def topics(self) -> dict[str, str]:
        """topic -> source kind (one subscription per topic)."""
        out: dict[str, str] = {}
        for s in self.sources:
            if out.setdefault(s.topic, s.kind) != s.kind:
                raise AdapterError(f"topic {s.topic} is used with two message types ({out[s.topic]}, {s.kind})")
        return out

    def fixed_width(self) -> int | None:
        widths = [source_width(s) for s in self.sources]
        return None if any(w is None for w in widths) else sum(widths)

    def update(self, topic: str, msg, now_s: float):
        self.latest[topic] = (msg, now_s)

    def oldest_age(self, now_s: float) -> float:
        """Age of the stalest input (inf if a topic has never been heard)."""
        return max((now_s - self.latest[t][1]) if t in self.latest else math.inf for t in self.topics)

    def assemble(self, override: dict | None = None) -> np.ndarray:
        """The model input from the latest messages (or, for the topics in `override`, from those
        messages instead, without storing them)."""
        latest = {t: m for t, (m, _) in self.latest.items()}
        latest.update(override or {})
        missing = [t for t in self.topics if t not in latest]
        if missing:
            raise AdapterError(f"no message yet on {missing}")
        return np.concatenate([extract(s, latest[s.topic]) for s in self.sources])
