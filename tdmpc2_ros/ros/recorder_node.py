"""``recorder_node``: records topics into rosbag2 bags (MCAP or sqlite3) that a trainer can ingest live.

It is ``ros2 bag record`` for the few std_msgs types of the topic contract, with one difference that
matters to a trainer reading while it records: a bag appears under its final name only once it is
complete (``tdmpc2_ros.bags.writer.BagWriter``). The open bag lives in a hidden ``.<name>.partial``
folder; ``split_duration_s`` / ``split_size_mb`` bound how much data waits there, and how much a
SIGKILL can lose.

Parameters (``config/recorder.yaml``)
--------------------------------------
=================  ==========================  ========================================================
name               default                     meaning
=================  ==========================  ========================================================
bag_dir            tdmpc2_bags                 folder of the bags (created; relative to the cwd)
topics             [/tdmpc2/transition]        entries ``topic[:type[:reliability]]``, e.g.
                                               ``/tdmpc2/episode_return:Float64``,
                                               ``/tdmpc2/observation:Float64MultiArray:best_effort``.
                                               type: Float64MultiArray (default), Float64, Int64, or any
                                               ``pkg/msg/Type`` known to both rclpy and the rosbags
                                               typestore; reliability: reliable (default) or best_effort
                                               (needed for best-effort publishers, e.g. SENSOR QoS)
storage            mcap                        mcap or sqlite3
split_duration_s   60.0                        start a new bag after this much time (0 = never)
split_size_mb      0.0                         start a new bag at this payload size, 10^6 bytes (0 = never)
prefix             tdmpc2                      bag names: ``<prefix>_<UTC start time>_<index>``
qos_depth          1000                        subscription queue depth (keep last)
=================  ==========================  ========================================================

Subscriptions are raw (``raw=True``): the node receives each message's CDR bytes, exactly what
``rclpy.serialization.serialize_message`` would return and what rosbag2 stores, and writes them
without a Python round trip. Messages are stamped with the node clock at reception (wall time, or sim
time with ``use_sim_time``), as ``ros2 bag record`` does. A timer closes a bag that reached
``split_duration_s`` even when no message arrives.

Shutdown: on SIGINT or SIGTERM it stops, takes what its subscriptions already received (up to 2 s),
closes the open bag (complete, renamed to its final name) and exits 0. Killed with SIGKILL, it loses
only the open bag. Bags left hidden by an earlier kill are reported at start and left alone.

Run: ``python -m tdmpc2_ros.ros.recorder_node --ros-args --params-file config/recorder.yaml``. On the
command line, quote entries that hold a type (YAML): ``-p "topics:=['/a', '/b:Float64']"``.
No torch: rclpy, numpy and rosbags.
"""

from __future__ import annotations

if __name__ == "__main__":  # a node process: a stop during the imports below is a clean stop too
    from tdmpc2_ros.ros import stop

    stop.take_signals()

import importlib
import sys
import time
from dataclasses import dataclass

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from tdmpc2_ros.bags.ledger import partial_bags
from tdmpc2_ros.bags.reader import TRANSITION_TOPIC
from tdmpc2_ros.bags.writer import STORAGES, BagWriter, typestore
from tdmpc2_ros.ros.params import ParameterError, declare_table
from tdmpc2_ros.ros.run import run_node, set_up_or_destroy

SHORT_TYPES = {"Float64MultiArray": "std_msgs/msg/Float64MultiArray", "Float64": "std_msgs/msg/Float64",
               "Int64": "std_msgs/msg/Int64"}
RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
DRAIN_S = 2.0  # at shutdown: how long to keep taking already-received messages

PARAMETERS = {  # name: (default, description)
    "bag_dir": ("tdmpc2_bags", "folder of the bags (created if missing)"),
    "topics": ([TRANSITION_TOPIC], "topics to record: 'topic[:type[:reliability]]' (type Float64MultiArray "
                                   "by default; Float64, Int64 or pkg/msg/Type; reliable or best_effort)"),
    "storage": ("mcap", "rosbag2 storage: mcap or sqlite3"),
    "split_duration_s": (60.0, "start a new bag after this many seconds (0 = never)"),
    "split_size_mb": (0.0, "start a new bag when the open one holds this many MB of messages (0 = never)"),
    "prefix": ("tdmpc2", "bag name prefix: <prefix>_<UTC start time>_<index>"),
    "qos_depth": (1000, "subscription queue depth (keep last)"),
}


@dataclass
class TopicSpec:
    topic: str
    msgtype: str  # e.g. std_msgs/msg/Float64
    msg_class: type
    reliability: str


def parse_topic(entry: str) -> TopicSpec:
    """'topic[:type[:reliability]]' -> TopicSpec. ROS names cannot contain ':', so the split is unambiguous."""
    parts = [p.strip() for p in str(entry).split(":")]
    if not parts[0]:
        raise ValueError(f"empty topic name in {entry!r}")
    if len(parts) > 3:
        raise ValueError(f"{entry!r}: expected topic[:type[:reliability]]")
    topic = parts[0]
    type_name = parts[1] if len(parts) > 1 and parts[1] else "Float64MultiArray"
    reliability = parts[2].lower() if len(parts) > 2 and parts[2] else "reliable"
    if reliability not in RELIABILITY:
        raise ValueError(f"{entry!r}: reliability must be one of {sorted(RELIABILITY)}")
    msgtype = SHORT_TYPES.get(type_name, type_name)
    pieces = msgtype.split("/")
    if len(pieces) == 2:
        pieces = [pieces[0], "msg", pieces[1]]
    if len(pieces) != 3 or pieces[1] != "msg":
        raise ValueError(f"{entry!r}: type {type_name!r} is neither {sorted(SHORT_TYPES)} nor pkg/msg/Type")
    msgtype = "/".join(pieces)
    if msgtype not in typestore().types:
        raise ValueError(f"{entry!r}: {msgtype} is not in the rosbags typestore, so its bag metadata cannot be written")
    try:
        msg_class = getattr(importlib.import_module(f"{pieces[0]}.msg"), pieces[2])
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{entry!r}: cannot import {msgtype} ({e})") from e
    return TopicSpec(topic, msgtype, msg_class, reliability)


class RecorderNode(Node):
    """The recorder. Counters for tests and tools: ``received`` (per topic), ``bags`` (closed paths)."""

    def __init__(self, **kwargs):
        super().__init__("recorder_node", **kwargs)
        self.writer = None
        set_up_or_destroy(self, self._setup)

    def _setup(self) -> None:
        p = declare_table(self, PARAMETERS)
        self.params = p
        storage = str(p["storage"]).strip().lower()
        if storage not in STORAGES:
            raise ParameterError("storage", p["storage"], f"expected one of {', '.join(sorted(STORAGES))}")
        if not str(p["bag_dir"]).strip():
            raise ParameterError("bag_dir", p["bag_dir"], "must be a folder path")
        if not float(p["split_duration_s"]) >= 0:
            raise ParameterError("split_duration_s", p["split_duration_s"], "must be >= 0 (0 = never)")
        if not float(p["split_size_mb"]) >= 0:
            raise ParameterError("split_size_mb", p["split_size_mb"], "must be >= 0 (0 = never)")
        if int(p["qos_depth"]) < 1:
            raise ParameterError("qos_depth", p["qos_depth"], "must be >= 1")
        entries = list(p["topics"] or [])
        if not entries:
            raise ParameterError("topics", entries, "name at least one topic")
        specs = []
        for entry in entries:
            try:
                specs.append(parse_topic(entry))
            except ValueError as e:
                raise ParameterError("topics", entries, str(e)) from e
        if len({s.topic for s in specs}) != len(specs):
            raise ParameterError("topics", entries, "a topic is listed twice")
        duration = float(p["split_duration_s"]) or None
        size = int(float(p["split_size_mb"]) * 1e6) or None
        try:
            self.writer = BagWriter(p["bag_dir"], storage=storage, split_duration_s=duration, split_size_bytes=size,
                                    prefix=str(p["prefix"]), on_close=self._on_bag_closed)
        except (ValueError, OSError) as e:
            which = "prefix" if "prefix" in str(e) else "bag_dir"
            raise ParameterError(which, p[which], str(e)) from e

        self.specs = specs
        self.received = {s.topic: 0 for s in specs}
        self.bags: list = []
        log = self.get_logger()
        for old in partial_bags(self.writer.directory):
            log.warning(f"unfinished bag from an earlier run (killed while recording?): {old}; it is not ingested")
        for s in specs:
            self.writer.add_topic(s.topic, s.msgtype)
            q = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
                           reliability=RELIABILITY[s.reliability])
            self.create_subscription(s.msg_class, s.topic, self._callback(s), q, raw=True)
        every = f"{duration:g} s" if duration else "never"
        limit = f"{size} bytes" if size else "no size limit"
        log.info(f"recording {', '.join(f'{s.topic} ({s.msgtype}, {s.reliability})' for s in specs)} into "
                 f"{self.writer.directory} as {storage} bags (new bag every {every}, at {limit})")
        if duration:
            steady = Clock(clock_type=ClockType.STEADY_TIME)
            self._roll_timer = self.create_timer(min(1.0, duration / 4), self._on_roll, clock=steady)

    def _callback(self, spec: TopicSpec):
        topic, msgtype, writer, clock, received = spec.topic, spec.msgtype, self.writer, self.get_clock(), self.received

        def on_message(data: bytes) -> None:
            writer.write(topic, msgtype, data, clock.now().nanoseconds)
            received[topic] += 1

        return on_message

    def _on_roll(self) -> None:
        self.writer.roll_if_due(self.get_clock().now().nanoseconds)

    def _on_bag_closed(self, path, count: int) -> None:
        self.bags.append(path)
        self.get_logger().info(f"closed bag {path} ({count} messages)")

    @property
    def message_count(self) -> int:
        return sum(self.received.values())

    def close(self):
        """Publish the open bag; returns its path or None."""
        return self.writer.close() if self.writer is not None else None

    def destroy_node(self):
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 — still release the node's handles
            self.get_logger().error(f"could not close the open bag: {e}")
        return super().destroy_node()


def _drain_and_close(node, executor, why: str):
    """Take what the subscriptions already hold, until nothing arrives for 0.2 s (at most DRAIN_S),
    then close the open bag."""
    deadline, quiet_since, seen = time.monotonic() + DRAIN_S, time.monotonic(), node.message_count
    while rclpy.ok() and time.monotonic() < deadline and time.monotonic() - quiet_since < 0.2:
        executor.spin_once(timeout_sec=0.02)
        if node.message_count != seen:
            seen, quiet_since = node.message_count, time.monotonic()
    path = node.close()
    node.get_logger().info(f"stopped ({why}): {node.message_count} messages in {len(node.bags)} bag(s)"
                           + (f", last {path}" if path else ""))


def main(args=None) -> int:
    # Own SIGINT/SIGTERM handling: messages already received but not yet taken are still written.
    return run_node("recorder_node", RecorderNode, args, finish=_drain_and_close)


if __name__ == "__main__":
    sys.exit(main())
