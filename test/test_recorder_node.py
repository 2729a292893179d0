"""recorder_node over real DDS, in a subprocess on its own ROS domain: what a publisher sends is what
the bags hold after SIGINT; a SIGKILL mid-run leaves every bag under a final name readable and loses
at most the open (hidden) one; a restart reports that one; bad parameters name themselves. A low disk
or a failed write pauses it (in process, with the disk's free space and the writer made to fail; and
in a subprocess against the real disk), and it resumes in a new bag."""

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
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Float64, Float64MultiArray, MultiArrayDimension  # noqa: E402

from ros_harness import Ros, cleaned_up, finish_process, start_node_process  # noqa: E402
from tdmpc2_ros.bags import BagSkipped, closed_bags, partial_bags, read_records  # noqa: E402
from tdmpc2_ros.bags.cdr import decode_float64s  # noqa: E402
from tdmpc2_ros.ros import recorder_node  # noqa: E402
from tdmpc2_ros.ros.diagnostics import ERROR, OK, WARN  # noqa: E402
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
    assert "as mcap bags (chunk compression;" in out  # the default: MCAP's zstd chunks, read back below
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
                             ({"prefix": ".hidden"}, "prefix"), ({"topics": ["/a:Float64:sometimes"]}, "topics"),
                             ({"storage": "sqlite3", "compression": "chunk"}, "compression"),
                             ({"compression": "lz4"}, "compression")):
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


def record_bytes(i: int) -> bytes:
    from rclpy.serialization import serialize_message

    return serialize_message(to_msg(transition(i)))


def in_process_recorder(ros: Ros, bag_dir, **params) -> RecorderNode:
    overrides = [Parameter("bag_dir", value=str(bag_dir)), Parameter("split_duration_s", value=0.0)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return ros.add(RecorderNode(context=ros.context, parameter_overrides=overrides))


def test_a_low_disk_pauses_recording_and_enough_room_resumes_it(tmp_path, monkeypatch):
    """Below min_free_mb the open bag is closed (complete), messages are dropped and counted, and
    /diagnostics warns; above min_free_mb + 10% a new bag starts. Every message written reads back."""
    free = {"bytes": 10**12}
    monkeypatch.setattr(recorder_node, "free_bytes", lambda directory: free["bytes"])
    ros = Ros()
    try:
        node = in_process_recorder(ros, tmp_path / "bags", min_free_mb=100.0)
        write = node._callback(node.specs[0])
        for i in range(10):
            write(record_bytes(i))
        assert node.status()[0] == OK and node.writer.current is not None
        free["bytes"] = 50 * 10**6
        node._on_timer()
        level, message, values = node.status()
        assert (level, values["state"], values["open_bag"], values["bags_closed"]) == (WARN, "paused_disk_low", "", 1)
        assert "50 MB free" in message and "min_free_mb 100" in message
        for i in range(10, 15):
            write(record_bytes(i))  # dropped
        free["bytes"] = 105 * 10**6  # above min_free_mb, not above the margin: still paused
        node._on_timer()
        assert node.state == "paused_disk_low"
        free["bytes"] = 120 * 10**6
        node._on_timer()
        assert node.state == "recording"
        for i in range(15, 18):
            write(record_bytes(i))
        assert node.close() is not None
        assert node.status()[2]["dropped"] == 5 and node.message_count == 13
    finally:
        ros.close()
    bags = closed_bags(tmp_path / "bags")
    assert [[t.episode * 50 + t.step for t in read_records(b)] for b in bags] == [list(range(10)), [15, 16, 17]]
    assert partial_bags(tmp_path / "bags") == []


def test_a_failed_write_pauses_recording_and_it_resumes_in_a_new_bag(tmp_path, monkeypatch):
    """A write that raises (ENOSPC from a disk filled by someone else) pauses the recorder instead of
    ending it: the open bag is closed, or left hidden if closing fails too, and after retry_s the next
    message opens a new bag. The closed bags are untouched."""
    ros = Ros()
    try:
        node = in_process_recorder(ros, tmp_path / "bags", retry_s=0.2, min_free_mb=0.0)
        write = node._callback(node.specs[0])
        for i in range(6):
            write(record_bytes(i))
        node.close()  # one closed bag, then a new one that will fail
        for i in range(6, 9):
            write(record_bytes(i))
        writer_write, writer_close = node.writer.write, node.writer.close

        def full(*args):
            raise OSError(28, "No space left on device")

        def broken_close():
            node.writer._writer = None  # as BagWriter does first: the writer lets go of the bag
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(node.writer, "write", full)
        monkeypatch.setattr(node.writer, "close", broken_close)
        write(record_bytes(9))
        level, message, values = node.status()
        assert (level, values["state"]) == (ERROR, "paused_write_failed") and "No space left" in message
        write(record_bytes(10))  # dropped while paused
        node._on_timer()
        assert node.state == "paused_write_failed"  # retry_s not over yet
        monkeypatch.setattr(node.writer, "write", writer_write)
        monkeypatch.setattr(node.writer, "close", writer_close)
        time.sleep(0.25)
        node._on_timer()
        assert node.state == "recording"
        for i in range(11, 14):
            write(record_bytes(i))
        node.close()
        assert node.status()[2]["dropped"] == 2
    finally:
        ros.close()
    bags = closed_bags(tmp_path / "bags")
    assert [[t.episode * 50 + t.step for t in read_records(b)] for b in bags] == [list(range(6)), [11, 12, 13]]
    assert len(partial_bags(tmp_path / "bags")) == 1  # the bag whose close failed: hidden, never ingested


def test_a_recorder_on_a_full_disk_records_nothing_and_says_so(tmp_path):
    """Against the real disk: a min_free_mb above what any disk has keeps it paused from the start; it
    drops and counts what arrives, warns on /diagnostics, and still stops cleanly."""
    ros = Ros()
    bag_dir = tmp_path / "bags"
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(bag_dir), min_free_mb=1e12)
    statuses = []
    with cleaned_up(proc, ros=ros):
        node = ros.node("recorder_full_disk_publisher")
        pub = node.create_publisher(Float64MultiArray, TOPIC, DEEP)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: statuses.extend(s for s in m.status if s.name == "tdmpc2_ros: recorder"), 10)
        connect(ros, pub, proc)
        for i in range(20):
            pub.publish(to_msg(transition(i)))
        assert pub.wait_for_all_acked(Duration(seconds=30))

        def dropped_all():
            return statuses and {kv.key: kv.value for kv in statuses[-1].values}["dropped"] == "20"

        assert ros.spin_until(dropped_all, 30.0), [s.message for s in statuses[-3:]]
        code, out = finish(proc, signal.SIGINT)
    assert code == 0, out[-3000:]
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert statuses[-1].level == WARN and values["state"] == "paused_disk_low" and values["messages"] == "0"
    assert "recording paused" in out and "below min_free_mb" in out
    assert closed_bags(bag_dir) == [] and partial_bags(bag_dir) == []


def test_a_topic_published_with_another_type_is_named_in_a_warning(tmp_path):
    """The recorder subscribes /tdmpc2/transition as Float64MultiArray; a publisher of JointState there
    is never matched (and ROS says nothing): the recorder names the type it is published as, once."""
    from sensor_msgs.msg import JointState

    from ros_harness import LineReader

    ros = Ros()
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(tmp_path / "bags"))
    with cleaned_up(proc, ros=ros):
        reader = LineReader(proc)
        ros.node("recorder_wrong_type_publisher").create_publisher(JointState, TOPIC, DEEP)
        assert reader.wait_for("nothing recorded from", 60), reader.text()[-3000:]
        time.sleep(2.5)  # two more timer rounds: still named only once
        proc.send_signal(signal.SIGINT)
        code, out = reader.finish()
    assert code == 0, out[-3000:]
    assert (f"nothing recorded from {TOPIC} is published as sensor_msgs/msg/JointState, not "
            f"std_msgs/msg/Float64MultiArray: check topics") in out
    assert out.count("nothing recorded from") == 1


def test_a_publisher_whose_qos_cannot_reach_the_subscription_is_named(tmp_path):
    """/tdmpc2/transition is recorded reliably (the default); a best-effort publisher of the right type
    there is never matched, and DDS says so only in an event: the recorder names the topic, the policy
    and the parameter in its log and on /diagnostics (WARN), and still records a reliable publisher. Once
    the best-effort publisher has left the graph, the warning clears."""
    from ros_harness import LineReader

    ros = Ros()
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(tmp_path / "bags"), topics=[TOPIC])
    node = ros.node("recorder_best_effort_publisher")
    status = {}
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.update(
        {s.name: (s.level, s.message, {kv.key: kv.value for kv in s.values}) for s in m.status}), 10)
    with cleaned_up(proc, ros=ros):
        reader = LineReader(proc)
        unmatched = node.create_publisher(Float64MultiArray, TOPIC,
                                          QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert ros.spin_until(lambda: "tdmpc2_ros: recorder" in status and status["tdmpc2_ros: recorder"][0] == WARN,
                              60), (status, reader.text()[-3000:])
        level, message, values = status["tdmpc2_ros: recorder"]
        assert "see unmatched_qos" in message and TOPIC in values["unmatched_qos"], values
        assert "(reliability)" in values["unmatched_qos"] and "check topics (it asks reliable" in values["unmatched_qos"]
        good = node.create_publisher(Float64MultiArray, TOPIC, DEEP)
        connect(ros, good, proc)
        good.publish(to_msg(transition(0)))
        ros.spin_for(1.0)
        assert status["tdmpc2_ros: recorder"][0] == WARN  # the best-effort publisher is still there
        node.destroy_publisher(unmatched)
        assert ros.spin_until(lambda: status["tdmpc2_ros: recorder"][:2] == (OK, "recording"), 10), status
        assert status["tdmpc2_ros: recorder"][2]["unmatched_qos"] == ""
        proc.send_signal(signal.SIGINT)
        code, out = reader.finish()
    assert code == 0, out[-3000:]
    assert f"nothing recorded from them: 1 publisher(s) on {TOPIC}" in out
    assert f"no publisher on {TOPIC} offers a QoS its subscription cannot match any more" in out
    bags = closed_bags(tmp_path / "bags")
    assert [len(read_records(b)) for b in bags] == [1]  # the reliable publisher's message


def test_split_closes_the_open_bag_now_for_the_trainer(tmp_path):
    """~/split (std_srvs/Trigger), over DDS: the open bag is closed at once (a trainer can ingest a
    demonstration just recorded, not after split_duration_s), the next message opens a new bag, and
    with no open bag the answer says so."""
    from std_srvs.srv import Trigger

    ros = Ros()
    try:
        node = in_process_recorder(ros, tmp_path / "bags", split_duration_s=3600.0, min_free_mb=0.0)
        client = ros.node("split_client").create_client(Trigger, "/recorder_node/split")
        assert client.wait_for_service(timeout_sec=10)

        def split():
            future = client.call_async(Trigger.Request())
            assert ros.spin_until(future.done, 10)
            return future.result()

        write = node._callback(node.specs[0])
        for i in range(5):
            write(record_bytes(i))
        assert closed_bags(tmp_path / "bags") == []  # an hour's bag: still open and hidden
        answer = split()
        bags = closed_bags(tmp_path / "bags")
        assert answer.success and len(bags) == 1 and str(bags[0]) in answer.message
        assert [t.step for t in read_records(bags[0])] == list(range(5))
        again = split()
        assert again.success and again.message.startswith("no open bag")
        for i in range(5, 8):
            write(record_bytes(i))
        node.close()
    finally:
        ros.close()
    assert [[t.step for t in read_records(b)] for b in closed_bags(tmp_path / "bags")] == [list(range(5)), [5, 6, 7]]


def test_tdmpc2_ros_call_split_reaches_a_recorder_in_another_process(tmp_path, monkeypatch, capsys):
    """`tdmpc2-ros call` is ros2 service call for machines without the ros2 command: over DDS, to a
    recorder process, `call split` closes its open bag; a service nobody offers is one line, exit 2."""
    from tdmpc2_ros import cli

    ros = Ros()
    bag_dir = tmp_path / "bags"
    proc = start_recorder(ros.domain, tmp_path, bag_dir=str(bag_dir), split_duration_s=3600.0)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain))
    with cleaned_up(proc, ros=ros):
        pub = ros.node("call_publisher").create_publisher(Float64MultiArray, TOPIC, DEEP)
        connect(ros, pub, proc)
        for i in range(5):
            pub.publish(to_msg(transition(i)))
        assert pub.wait_for_all_acked(Duration(seconds=30))
        assert ros.spin_until(lambda: bool(partial_bags(bag_dir)), 10.0) and closed_bags(bag_dir) == []
        assert cli.main(["call", "split", "--wait", "30"]) == 0
        out = capsys.readouterr().out
        bags = closed_bags(bag_dir)
        assert out.startswith("success: closed ") and len(bags) == 1 and str(bags[0]) in out
        assert [t.step for t in read_records(bags[0])] == list(range(5))
        assert cli.main(["call", "enable", "false", "--wait", "1"]) == 2  # no planner on this domain
        assert "no service /planner_node/enable (SetBool) answered within 1 s" in capsys.readouterr().err
    assert cli.main(["call", "split", "now"]) == 2 and "split takes no value" in capsys.readouterr().err
