"""recorder_node over real DDS, in a subprocess on its own ROS domain: what a publisher sends is what
the bags hold after SIGINT; a SIGKILL mid-run leaves every bag under a final name readable and loses
at most the open (hidden) one; a restart reports that one; bad parameters name themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import time

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before any rclpy context exists

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, MultiArrayDimension  # noqa: E402

from ros_harness import Ros, cleaned_up, finish_process, start_node_process  # noqa: E402
from tdmpc2_ros.bags import BagSkipped, closed_bags, partial_bags, read_records  # noqa: E402
from tdmpc2_ros.bags.cdr import decode_float64s  # noqa: E402
from tdmpc2_ros.ros.recorder_node import ParameterError, RecorderNode, parse_topic  # noqa: E402
from tdmpc2_ros.runtime.transition import Transition  # noqa: E402

TOPIC = "/tdmpc2/transition"
RETURN_TOPIC = "/tdmpc2/episode_return"
DEEP = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def transition(i: int, per_episode: int = 50) -> Transition:
    rng = np.random.default_rng(i)
    return Transition(i // per_episode, i % per_episode, rng.normal(size=5), rng.uniform(-1, 1, 1), float(rng.normal()),
                      rng.normal(size=5), terminated=False, truncated=(i % per_episode == per_episode - 1),
                      model_version="abc123")


def to_msg(t: Transition) -> Float64MultiArray:
    dims, data = t.pack()
    msg = Float64MultiArray(data=data.tolist())
    msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=size) for label, size in dims]
    return msg


def assert_same(a: Transition, b: Transition) -> None:
    assert (a.episode, a.step, a.reward, a.terminated, a.truncated, a.model_version) == \
        (b.episode, b.step, b.reward, b.terminated, b.truncated, b.model_version)
    for name in ("obs", "action", "next_obs"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def start_recorder(domain: int, tmp_path, **params) -> subprocess.Popen:
    return start_node_process("recorder_node", domain, tmp_path, **params)


def finish(proc: subprocess.Popen, sig=None, timeout: float = 60.0) -> tuple[int, str]:
    return finish_process(proc, sig, timeout, "recorder")


def connect(ros: Ros, pub, proc, timeout: float = 90.0) -> None:
    ok = ros.spin_until(lambda: pub.get_subscription_count() >= 1 or proc.poll() is not None, timeout)
    if not ok or proc.poll() is not None:
        code, out = finish(proc, signal.SIGKILL, 10)
        pytest.fail(f"recorder never subscribed (exit {code}):\n{out[-3000:]}")


def test_sigint_bags_hold_exactly_what_was_published(tmp_path):
    n = 300
    ros = Ros()
    bag_dir = tmp_path / "bags"
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(bag_dir), split_duration_s=0.0,
                          topics=[TOPIC, f"{RETURN_TOPIC}:Float64"])
    with cleaned_up(proc, ros=ros):
        node = ros.node("recorder_test_publisher")
        pub = node.create_publisher(Float64MultiArray, TOPIC, DEEP)
        pub_return = node.create_publisher(Float64, RETURN_TOPIC, DEEP)
        connect(ros, pub, proc)
        assert ros.spin_until(lambda: pub_return.get_subscription_count() >= 1, 30.0)
        sent = [transition(i) for i in range(n)]
        for i, t in enumerate(sent):
            pub.publish(to_msg(t))
            if i % 50 == 49:
                pub_return.publish(Float64(data=float(i)))
        assert pub.wait_for_all_acked(Duration(seconds=30)) and pub_return.wait_for_all_acked(Duration(seconds=30))
        assert ros.spin_until(lambda: bool(partial_bags(bag_dir)), 10.0)  # recording: hidden until closed
        assert closed_bags(bag_dir) == []
        code, out = finish(proc, signal.SIGINT)
    assert code == 0, out[-3000:]
    assert "closed bag" in out and f"{n + 6} messages in 1 bag(s)" in out, out[-3000:]
    bags = closed_bags(bag_dir)
    assert len(bags) == 1 and partial_bags(bag_dir) == []
    assert (bags[0] / f"{bags[0].name}.mcap").is_file()
    got = read_records(bags[0])
    assert len(got) == n
    for a, b in zip(got, sent):
        assert_same(a, Transition.unpack(*b.pack()))
    with Reader(bags[0]) as reader:
        conns = [c for c in reader.connections if c.topic == RETURN_TOPIC]
        assert conns and conns[0].msgtype == "std_msgs/msg/Float64"
        raws = [raw for _, _, raw in reader.messages(connections=conns)]
    values, ok = decode_float64s(raws)
    assert ok.all() and values.tolist() == [49.0, 99.0, 149.0, 199.0, 249.0, 299.0]


def test_sigkill_keeps_closed_bags_and_restart_reports_the_partial(tmp_path):
    from rclpy.serialization import serialize_message

    record_bytes = len(serialize_message(to_msg(transition(0))))
    split_bytes = 5000
    per_bag = -(-split_bytes // record_bytes)  # a bag closes with the message that reaches split_size
    ros = Ros()
    bag_dir = tmp_path / "bags"
    # split by size: bags close only when a message fills them, so the kill below always finds one open
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(bag_dir), split_duration_s=0.0,
                          split_size_mb=split_bytes / 1e6, storage="sqlite3")
    sent = []
    with cleaned_up(proc, ros=ros):
        node = ros.node("recorder_kill_publisher")
        pub = node.create_publisher(Float64MultiArray, TOPIC, DEEP)
        connect(ros, pub, proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(closed_bags(bag_dir)) < 3:  # ~200 Hz until 3 bags are closed
            sent.append(transition(len(sent)))
            pub.publish(to_msg(sent[-1]))
            ros.spin_for(0.005)
        assert len(closed_bags(bag_dir)) >= 3, "the recorder did not split"
        while len(sent) % per_bag != per_bag // 2:  # end half-way into a bag
            sent.append(transition(len(sent)))
            pub.publish(to_msg(sent[-1]))
        assert pub.wait_for_all_acked(Duration(seconds=30))
        ros.spin_for(1.0)  # let the recorder write them
        code, out = finish(proc, signal.SIGKILL)
        assert code == -signal.SIGKILL

    bags = closed_bags(bag_dir)
    partial = partial_bags(bag_dir)
    assert len(bags) >= 3 and len(partial) == 1  # the bag open at the kill stays hidden
    got = [t for b in bags for t in read_records(b)]  # every closed bag reads; in order, no duplicates
    assert [len(read_records(b)) for b in bags] == [per_bag] * len(bags)
    steps = [t.episode * 50 + t.step for t in got]
    assert steps == list(range(len(got))), "closed bags must hold a gap-free prefix of what was sent"
    assert len(sent) - len(got) == per_bag // 2, "only the open bag may be lost"
    for a, i in zip(got, steps):
        assert_same(a, Transition.unpack(*sent[i].pack()))
    inner = [p for p in partial[0].iterdir()]
    for p in inner:
        with pytest.raises(BagSkipped, match="no metadata.yaml"):
            read_records(p)

    # A restarted recorder reports the unfinished bag, records on, and closes cleanly on SIGTERM.
    ros = Ros()
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(bag_dir), split_duration_s=0.0,
                          split_size_mb=split_bytes / 1e6, storage="sqlite3")
    with cleaned_up(proc, ros=ros):
        node = ros.node("recorder_restart_publisher")
        pub = node.create_publisher(Float64MultiArray, TOPIC, DEEP)
        connect(ros, pub, proc)
        more = [transition(10_000 + i) for i in range(30)]
        for t in more:
            pub.publish(to_msg(t))
        assert pub.wait_for_all_acked(Duration(seconds=30))
        code, out = finish(proc, signal.SIGTERM)
    assert code == 0, out[-3000:]
    assert "unfinished bag from an earlier run" in out and partial[0].name in out
    new = [b for b in closed_bags(bag_dir) if b not in bags]
    got = [t for b in new for t in read_records(b)]
    assert len(got) == 30
    for a, b in zip(got, more):
        assert_same(a, Transition.unpack(*b.pack()))
    assert partial_bags(bag_dir) == partial  # the old one is left alone


def test_bad_parameters_name_the_parameter(tmp_path):
    ros = Ros()
    try:
        for params, name in (({"storage": "zip"}, "storage"), ({"topics": ["/a:Float32Thing"]}, "topics"),
                             ({"topics": ["/a", "/a:Float64"]}, "topics"),
                             ({"split_duration_s": -1.0}, "split_duration_s"),
                             ({"prefix": ".hidden"}, "prefix"), ({"topics": ["/a:Float64:sometimes"]}, "topics")):
            overrides = [Parameter("bag_dir", value=str(tmp_path / "b"))] + \
                [Parameter(k, value=v) for k, v in params.items()]
            with pytest.raises(ParameterError, match=f"'{name}'") as info:
                RecorderNode(context=ros.context, parameter_overrides=overrides)
            assert info.value.parameter == name
    finally:
        ros.close()
    spec = parse_topic("/tdmpc2/observation:Float64MultiArray:best_effort")
    assert (spec.topic, spec.msgtype, spec.reliability) == ("/tdmpc2/observation", "std_msgs/msg/Float64MultiArray",
                                                            "best_effort")
    assert parse_topic("/x:std_msgs/Int64").msgtype == "std_msgs/msg/Int64"
    assert parse_topic("/x").msgtype == "std_msgs/msg/Float64MultiArray"
