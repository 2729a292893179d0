"""``recorder_node``: records topics into rosbag2 bags (MCAP or sqlite3) that a trainer can ingest live.

It is ``ros2 bag record`` for the few std_msgs types of the topic contract, with one difference that
matters to a trainer reading while it records: a bag appears under its final name only once it is
complete (``tdmpc2_ros.bags.writer.BagWriter``). The open bag lives in a hidden ``.<name>.partial``
folder; ``split_duration_s`` / ``split_size_mb`` bound how much data waits there, and how much a
SIGKILL can lose. ``~/split`` (std_srvs/Trigger) closes it at once, for a trainer that should learn
from what was just recorded.

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
compression        auto                        zstd: auto (MCAP's compressed chunks on mcap, none on
                                               sqlite3), chunk, file, message or none (bags/writer.py)
split_duration_s   60.0                        start a new bag after this much time (0 = never)
split_size_mb      0.0                         start a new bag at this payload size, 10^6 bytes (0 = never)
prefix             tdmpc2                      bag names: ``<prefix>_<UTC start time>_<index>``
qos_depth          1000                        subscription queue depth (keep last)
min_free_mb        500.0                       pause below this much free space on bag_dir's disk
                                               (10^6 bytes; 0 = never)
retry_s            5.0                         after a failed write, how long to wait before a new bag
=================  ==========================  ========================================================

Disk full, and failed writes. A robot that records all day fills its disk, and a full disk takes down
more than the recorder (logs, other nodes' files). So the recorder checks the free space of bag_dir's
disk once a second and, below ``min_free_mb``, *pauses*: it closes the open bag (complete and readable,
like any other), drops the messages that arrive meanwhile (counted per topic), and starts a new bag
once the free space is back above ``min_free_mb`` plus 10%. A write that fails all the same (ENOSPC
from a disk filled by someone else, EIO) pauses it too: the open bag is closed if it can be (if not, it
stays hidden as ``.<name>.partial`` and is never ingested), and recording resumes in a new bag after
``retry_s``. It never exits over it, and the bags already closed are not touched.
``/diagnostics`` (``tdmpc2_ros: recorder``, 1 Hz) says which: state (recording, paused_disk_low,
paused_write_failed), why, free MB, messages written and dropped, closed bags and the open one.

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
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile
from std_srvs.srv import Trigger

from tdmpc2_ros.bags.ledger import partial_bags
from tdmpc2_ros.bags.reader import TRANSITION_TOPIC
from tdmpc2_ros.bags.writer import STORAGES, BagWriter, resolve_compression, typestore
from tdmpc2_ros.ros.diagnostics import ERROR, OK, WARN, status_array
from tdmpc2_ros.ros.graph import UnmatchedPublishers, mismatch_hint
from tdmpc2_ros.ros.params import ParameterError, declare_table
from tdmpc2_ros.ros.qos import RELIABILITY
from tdmpc2_ros.ros.run import run_node, set_up_or_destroy

SHORT_TYPES = {"Float64MultiArray": "std_msgs/msg/Float64MultiArray", "Float64": "std_msgs/msg/Float64",
               "Int64": "std_msgs/msg/Int64"}
DRAIN_S = 2.0  # at shutdown: how long to keep taking already-received messages
RESUME_MARGIN = 1.1  # a pause for disk space ends above min_free_mb x this (no flapping at the line)
RECORDING, DISK_LOW, WRITE_FAILED = "recording", "paused_disk_low", "paused_write_failed"
WRITE_ERRORS = (OSError, sqlite3.Error)  # a full or failing disk, from the mcap file or the sqlite3 database

PARAMETERS = {  # name: (default, description)
    "bag_dir": ("tdmpc2_bags", "folder of the bags (created if missing)"),
    "topics": ([TRANSITION_TOPIC], "topics to record: 'topic[:type[:reliability]]' (type Float64MultiArray "
                                   "by default; Float64, Int64 or pkg/msg/Type; reliable or best_effort)"),
    "storage": ("mcap", "rosbag2 storage: mcap or sqlite3"),
    "compression": ("auto", "zstd compression: auto (MCAP's compressed chunks on mcap, none on sqlite3), chunk, "
                            "file, message or none"),
    "split_duration_s": (60.0, "start a new bag after this many seconds (0 = never)"),
    "split_size_mb": (0.0, "start a new bag when the open one holds this many MB of messages, before compression "
                           "(0 = never)"),
    "prefix": ("tdmpc2", "bag name prefix: <prefix>_<UTC start time>_<index>"),
    "qos_depth": (1000, "subscription queue depth (keep last)"),
    "min_free_mb": (500.0, "pause recording below this much free space on bag_dir's disk, MB (0 = never)"),
    "retry_s": (5.0, "after a failed write, seconds before recording resumes in a new bag"),
}


def free_bytes(directory) -> int:
    """Free space of the disk that holds `directory`, for an unprivileged writer."""
    return shutil.disk_usage(directory).free


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
        try:
            compression = resolve_compression(str(p["compression"]).strip().lower(), storage)
        except ValueError as e:
            raise ParameterError("compression", p["compression"], str(e)) from e
        if not str(p["bag_dir"]).strip():
            raise ParameterError("bag_dir", p["bag_dir"], "must be a folder path")
        if not float(p["split_duration_s"]) >= 0:
            raise ParameterError("split_duration_s", p["split_duration_s"], "must be >= 0 (0 = never)")
        if not float(p["split_size_mb"]) >= 0:
            raise ParameterError("split_size_mb", p["split_size_mb"], "must be >= 0 (0 = never)")
        if int(p["qos_depth"]) < 1:
            raise ParameterError("qos_depth", p["qos_depth"], "must be >= 1")
        if not float(p["min_free_mb"]) >= 0:
            raise ParameterError("min_free_mb", p["min_free_mb"], "must be >= 0 (0 = never pause)")
        if not float(p["retry_s"]) > 0:
            raise ParameterError("retry_s", p["retry_s"], "must be > 0")
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
                                    prefix=str(p["prefix"]), on_close=self._on_bag_closed, compression=compression)
        except (ValueError, OSError) as e:
            which = "prefix" if "prefix" in str(e) else "bag_dir"
            raise ParameterError(which, p[which], str(e)) from e

        self.specs = specs
        self.received = {s.topic: 0 for s in specs}
        self.dropped = {s.topic: 0 for s in specs}  # while paused
        self._type_warned: set[str] = set()  # topics named for being published with another type
        self.unmatched: dict[str, UnmatchedPublishers] = {}  # topic: publishers its subscription cannot match
        self.bags: list = []
        self.state, self.why, self._retry_at = RECORDING, "", 0.0
        self.min_free = int(float(p["min_free_mb"]) * 1e6)
        self.free = 0  # bytes, as of the last check (_check_disk, below and once a second)
        log = self.get_logger()
        for old in partial_bags(self.writer.directory):
            log.warning(f"unfinished bag from an earlier run (killed while recording?): {old}; it is not ingested")
        for s in specs:
            self.writer.add_topic(s.topic, s.msgtype)
            q = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
                           reliability=RELIABILITY[s.reliability])
            unmatched = self.unmatched[s.topic] = UnmatchedPublishers(
                self, s.topic, q, f"topics (it asks {s.reliability}: ':best_effort' records any publisher)",
                self._on_unmatched)
            self.create_subscription(s.msg_class, s.topic, self._callback(s), q, raw=True,
                                     event_callbacks=unmatched.events)
        every = f"{duration:g} s" if duration else "never"
        limit = f"{size} bytes" if size else "no size limit"
        log.info(f"recording {', '.join(f'{s.topic} ({s.msgtype}, {s.reliability})' for s in specs)} into "
                 f"{self.writer.directory} as {storage} bags ({compression} compression; new bag every {every}, at {limit})")
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        steady = self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._check_disk()
        self.create_timer(min(1.0, duration / 4) if duration else 1.0, self._on_timer, clock=steady)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady)
        self.create_service(Trigger, "~/split", self._on_split)

    def _on_split(self, request, response):
        """~/split (std_srvs/Trigger): close the open bag now, as rosbag2's recorder's split_bagfile
        service does, so that the trainer ingests what was just recorded (a teleop demonstration, say)
        at its next scan instead of after split_duration_s. The next message opens a new bag."""
        if self.writer.current is None:
            response.success, response.message = True, "no open bag: nothing was recorded since the last one closed"
            return response
        try:
            path = self.writer.close()
        except WRITE_ERRORS as e:
            self._pause(WRITE_FAILED, f"closing {self.writer.directory}'s open bag failed: {e}")
            response.success, response.message = False, f"could not close the open bag: {e}"
            return response
        response.success, response.message = True, f"closed {path}; the next message opens a new bag"
        return response

    def _callback(self, spec: TopicSpec):
        topic, msgtype, writer, clock, received = spec.topic, spec.msgtype, self.writer, self.get_clock(), self.received

        def on_message(data: bytes) -> None:
            if self.state != RECORDING:
                self.dropped[topic] += 1
                return
            try:
                writer.write(topic, msgtype, data, clock.now().nanoseconds)
            except WRITE_ERRORS as e:  # ENOSPC, EIO: pause, never exit (the closed bags stay as they are)
                self.dropped[topic] += 1
                self._pause(WRITE_FAILED, f"writing to {writer.current or writer.directory} failed: {e}")
                return
            received[topic] += 1

        return on_message

    def _on_timer(self) -> None:
        self._warn_of_other_types()
        if self.state == RECORDING:
            try:
                self.writer.roll_if_due(self.get_clock().now().nanoseconds)
            except WRITE_ERRORS as e:
                self._pause(WRITE_FAILED, f"closing {self.writer.directory}'s open bag failed: {e}")
        self._check_disk()
        if self.state == WRITE_FAILED and self._steady.now().nanoseconds / 1e9 >= self._retry_at:
            self._resume("retrying after a failed write")

    def _warn_of_other_types(self) -> None:
        """A topic that stays silent because its publishers use another type is named once."""
        for spec in self.specs:
            if self.received[spec.topic] == 0 and spec.topic not in self._type_warned:
                hint = mismatch_hint(self, spec.topic, spec.msgtype, "topics")
                if hint:
                    self._type_warned.add(spec.topic)
                    self.get_logger().warning(f"nothing recorded from {hint}")

    def _on_unmatched(self, why: str) -> None:
        """Publishers whose QoS a topic's subscription cannot match: DDS delivers none of their messages."""
        self.get_logger().warning(f"nothing recorded from them: {why}")

    def _check_disk(self) -> None:
        """Pause below min_free_mb, resume above it plus a margin (min_free_mb 0: never)."""
        try:
            self.free = free_bytes(self.writer.directory)
        except OSError as e:
            self.get_logger().error(f"cannot read the free space of {self.writer.directory}: {e}")
            return
        if not self.min_free:
            return
        if self.state == RECORDING and self.free < self.min_free:
            self._pause(DISK_LOW, f"{self.free / 1e6:.0f} MB free on {self.writer.directory}'s disk, below "
                                  f"min_free_mb {self.min_free / 1e6:g}")
        elif self.state == DISK_LOW and self.free >= self.min_free * RESUME_MARGIN:
            self._resume(f"{self.free / 1e6:.0f} MB free again")

    def _pause(self, state: str, why: str) -> None:
        """Stop writing: close the open bag if there is one (if that fails too, it stays hidden and is
        never ingested), and count what arrives until _resume."""
        self.state, self.why = state, why
        self._retry_at = self._steady.now().nanoseconds / 1e9 + float(self.params["retry_s"])
        log = self.get_logger()
        try:
            self.writer.close()
        except Exception as e:  # noqa: BLE001 — the writer has let go of it either way; the bag stays hidden
            log.error(f"could not close the open bag ({e}); it stays unfinished and hidden, and is not ingested")
        (log.warning if state == DISK_LOW else log.error)(
            f"recording paused: {why}; messages are dropped (and counted) until it resumes; the "
            f"{len(self.bags)} closed bag(s) are intact")

    def _resume(self, why: str) -> None:
        self.get_logger().info(f"recording resumed ({why}) after dropping {sum(self.dropped.values())} "
                               f"message(s) in all; the next message opens a new bag")
        self.state, self.why = RECORDING, ""

    def status(self) -> tuple[bytes, str, dict]:
        """(level, message, values) of the /diagnostics status."""
        level = {RECORDING: OK, DISK_LOW: WARN, WRITE_FAILED: ERROR}[self.state]
        unmatched = [why for why in (u.check() for u in self.unmatched.values()) if why]
        values = {"state": self.state, "why": self.why, "free_mb": round(self.free / 1e6, 1),
                  "min_free_mb": self.min_free / 1e6, "messages": self.message_count,
                  "dropped": sum(self.dropped.values()), "bags_closed": len(self.bags),
                  "open_bag": str(self.writer.current or ""), "bag_dir": str(self.writer.directory),
                  "unmatched_qos": "; ".join(unmatched)}
        if self.state != RECORDING:
            return level, f"paused: {self.why}", values
        if unmatched:
            return WARN, f"recording, but not from {len(unmatched)} topic(s): see unmatched_qos", values
        return level, "recording", values

    def _publish_diagnostics(self) -> None:
        self._diagnostics.publish(status_array(self.get_clock().now().to_msg(), "tdmpc2_ros: recorder",
                                               self.get_name(), *self.status()))

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
