"""bags/fields.py reads robot messages' fields by byte offset, many messages at a time. It must give
exactly what the planner's own reading of a live message gives (runtime/observations.py: extract,
runtime/command_fields.py: command_vector), for every layout a robot may send: joints in any order,
arrays shorter than the names, empty arrays, several layouts of one length, big-endian bytes, and
truncated messages (NaN, which the reader counts as malformed)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tdmpc2_ros.bags.cdr import CdrError
from tdmpc2_ros.bags.fields import MessageColumns, _Walker, command_columns, source_column
from tdmpc2_ros.bags.writer import typestore
from tdmpc2_ros.runtime.command_fields import command_vector
from tdmpc2_ros.runtime.observations import FIELDS, AdapterError, extract, parse_source

STORE = typestore()
T = STORE.types
JOINT_STATE, TRAJECTORY = "sensor_msgs/msg/JointState", "trajectory_msgs/msg/JointTrajectory"
IMU, ODOMETRY = "sensor_msgs/msg/Imu", "nav_msgs/msg/Odometry"
JOINTS = ["slider", "hinge_1", "hinge_2", "a_joint_with_a_longer_name"]


def header(rng):
    frame = "base_link"[: int(rng.integers(0, 10))]
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=int(rng.integers(0, 2**31)),
                                    nanosec=int(rng.integers(0, 10**9))), frame_id=frame)


def floats(rng, n):
    values = rng.normal(size=n)
    if n and rng.random() < 0.1:
        values[rng.integers(n)] = rng.choice([np.nan, np.inf])  # a bad reading stays what it was
    return values


def joint_state(rng):
    names = list(rng.permutation(JOINTS)[: int(rng.integers(0, 5))])
    length = lambda: len(names) if rng.random() < 0.7 else int(rng.integers(0, len(names) + 1))  # noqa: E731
    return T[JOINT_STATE](header=header(rng), name=names, position=floats(rng, length()),
                          velocity=floats(rng, length()), effort=floats(rng, length()))


def trajectory(rng):
    names = list(rng.permutation(JOINTS)[: int(rng.integers(0, 5))])
    length = lambda: len(names) if rng.random() < 0.7 else int(rng.integers(0, len(names) + 1))  # noqa: E731
    points = [T["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=floats(rng, length()), velocities=floats(rng, length()), accelerations=floats(rng, length()),
        effort=floats(rng, length()), time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=int(rng.integers(10**9))))
        for _ in range(int(rng.choice([0, 1, 1, 2])))]
    return T[TRAJECTORY](header=header(rng), joint_names=names, points=points)


def vector(rng, name):
    return T[f"geometry_msgs/msg/{name}"](**{k: float(v) for k, v in zip("xyz", floats(rng, 3))})


def imu(rng):
    q = floats(rng, 4)
    return T[IMU](header=header(rng), orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                  orientation_covariance=floats(rng, 9), angular_velocity=vector(rng, "Vector3"),
                  angular_velocity_covariance=floats(rng, 9), linear_acceleration=vector(rng, "Vector3"),
                  linear_acceleration_covariance=floats(rng, 9))


def odometry(rng):
    q = floats(rng, 4)
    pose = T["geometry_msgs/msg/Pose"](position=vector(rng, "Point"),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    twist = T["geometry_msgs/msg/Twist"](linear=vector(rng, "Vector3"), angular=vector(rng, "Vector3"))
    return T[ODOMETRY](header=header(rng), child_frame_id="base_footprint"[: int(rng.integers(0, 15))],
                       pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=floats(rng, 36)),
                       twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=floats(rng, 36)))


def serialised(messages, msgtype, rng, big_endian_share=0.1):
    return [bytes(STORE.serialize_cdr(m, msgtype, little_endian=bool(rng.random() >= big_endian_share)))
            for m in messages]


def expected_source(source, msg) -> float:
    try:
        return float(extract(source, msg)[0])
    except (AdapterError, TypeError, ValueError):  # ValueError: cos/sin of an infinite angle
        return np.nan


SOURCES = {
    JOINT_STATE: [f"joint_state:/js:{f}:{j}" for f in ("position", "velocity", "effort") for j in JOINTS + ["absent"]]
    + ["joint_state:/js:cos(position):hinge_1", "joint_state:/js:sin(position):hinge_1"],
    IMU: [f"imu:/imu:{f}" for f in FIELDS["imu"]] + ["imu:/imu:sin(orientation.z)"],
    ODOMETRY: [f"odometry:/odom:{f}" for f in FIELDS["odometry"]],
}
MAKERS = {JOINT_STATE: joint_state, IMU: imu, ODOMETRY: odometry}


@pytest.mark.parametrize("msgtype", list(SOURCES))
def test_source_columns_equal_the_planners_reading_of_each_message(msgtype):
    rng = np.random.default_rng(zlib.crc32(msgtype.encode()))  # not hash(): it changes from run to run
    messages = [MAKERS[msgtype](rng) for _ in range(400)]
    raws = serialised(messages, msgtype, rng)
    columns = MessageColumns(raws, msgtype)
    assert not columns.unreadable
    assert len(columns.groups) < len(messages) / 2 or msgtype == JOINT_STATE  # messages share layouts
    for text in SOURCES[msgtype]:
        source = parse_source(text)
        want = np.array([expected_source(source, STORE.deserialize_cdr(raw, msgtype)) for raw in raws])
        got = source_column(columns, source)
        assert np.array_equal(got, want, equal_nan=True), text
        if "absent" not in text:
            assert np.isfinite(want).sum() > 100, text  # the comparison is not one of NaNs


@pytest.mark.parametrize("text", ["imu:/imu:header.stamp.sec", "imu:/imu:orientation", "imu:/imu:angular_velocity_covariance",
                                  "odometry:/odom:twist.covariance", "odometry:/odom:pose.pose.position.x",
                                  "odometry:/odom:no_such.field"])
def test_a_source_naming_any_other_field_is_refused_where_it_is_parsed(text):
    """Only the float64 fields above are sources, for the planner and the trainer alike: an integer
    (a stamp's seconds), a sub-message or a covariance array would be read by one side and not the other."""
    kind, field = text.split(":")[0], text.split(":")[2]
    with pytest.raises(AdapterError, match=f"{kind} field {field!r} is not one of {FIELDS[kind][0]}"):
        parse_source(text)


@pytest.mark.parametrize("msgtype,kind", [(TRAJECTORY, "joint_trajectory"), (JOINT_STATE, "joint_state")])
@pytest.mark.parametrize("interface", ["position", "velocity", "effort"])
def test_command_columns_equal_command_vector(msgtype, kind, interface):
    rng = np.random.default_rng(7)
    maker = trajectory if msgtype == TRAJECTORY else joint_state
    messages = [maker(rng) for _ in range(300)]
    raws = serialised(messages, msgtype, rng)
    joints = ("hinge_1", "slider")
    got = command_columns(MessageColumns(raws, msgtype), kind, joints, interface)
    rows = []
    for raw in raws:
        try:
            rows.append(command_vector(STORE.deserialize_cdr(raw, msgtype), kind, joints, interface))
        except ValueError:
            rows.append(np.full(2, np.nan))
    want = np.stack(rows)
    assert got.shape == (300, 2) and np.array_equal(got, want, equal_nan=True)
    assert np.isfinite(want).all(axis=1).sum() > 30


def test_same_length_messages_with_joints_in_another_order_are_told_apart():
    """Two layouts of one byte length (the names swapped) must not share offsets."""
    msgs = [T[JOINT_STATE](header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=i, nanosec=0),
                           frame_id=""), name=names, position=np.array([1.0 + i, 2.0 + i]), velocity=np.zeros(0),
                           effort=np.zeros(0))
            for i, names in enumerate([["ab", "cd"], ["cd", "ab"]] * 3)]
    raws = [bytes(STORE.serialize_cdr(m, JOINT_STATE)) for m in msgs]
    assert len({len(r) for r in raws}) == 1
    columns = MessageColumns(raws, JOINT_STATE)
    assert len(columns.groups) == 2
    ab = source_column(columns, parse_source("joint_state:/js:position:ab"))
    assert ab.tolist() == [1.0, 3.0, 3.0, 5.0, 5.0, 7.0]  # first joint in even messages, second in odd


def test_truncated_and_garbled_messages_read_as_nan_and_the_rest_as_written():
    rng = np.random.default_rng(3)
    messages = [joint_state(rng) for _ in range(50)]
    for m in messages:
        m.name, m.position = ["slider"], np.array([float(rng.normal())])
    raws = serialised(messages, JOINT_STATE, rng, big_endian_share=0.0)
    raws[5] = raws[5][:-6]  # cut inside the position
    raws[9] = b"\x07\x07" + raws[9][2:]  # not a CDR header rosbags knows
    columns = MessageColumns(raws, JOINT_STATE)
    values = source_column(columns, parse_source("joint_state:/js:position:slider"))
    assert sorted(columns.unreadable) == [5, 9] and np.isnan(values[[5, 9]]).all()
    keep = [i for i in range(50) if i not in (5, 9)]
    assert values[keep].tolist() == [messages[i].position[0] for i in keep]


def test_the_walker_refuses_what_it_cannot_read():
    raw = bytes(STORE.serialize_cdr(joint_state(np.random.default_rng(1)), JOINT_STATE, little_endian=False))
    with pytest.raises(CdrError, match="little-endian"):
        _Walker(raw, STORE.fielddefs).layout(JOINT_STATE)
    raw = bytes(STORE.serialize_cdr(imu(np.random.default_rng(1)), IMU))
    with pytest.raises(CdrError, match="message ends"):
        _Walker(raw[:40], STORE.fielddefs).layout(IMU)
    with pytest.raises(CdrError, match="unknown message type"):
        _Walker(raw, STORE.fielddefs).layout("my_msgs/msg/Thing")


ARRAY_LAYOUTS = [  # (dims, number of data values): what a robot's or the sim's arrays look like
    ([("obs", 5), ("reward", 1), ("episode", 1)], 7), ([("obs", 5), ("model:abc", 0), ("reward", 1)], 6),
    ([], 5), ([], 3), ([("obs", 3)], 3), ([("obs", 5)], 4),  # the last: a layout that does not add up
    ([("joints", 5)], 5), ([("obs", 2), ("obs2", 3)], 5),
]


def array_message(rng, msgtype="std_msgs/msg/Float64MultiArray"):
    dims, n = ARRAY_LAYOUTS[int(rng.integers(len(ARRAY_LAYOUTS)))]
    layout = T["std_msgs/msg/MultiArrayLayout"](
        dim=[T["std_msgs/msg/MultiArrayDimension"](label=label, size=size, stride=size) for label, size in dims],
        data_offset=0)
    dtype = np.float32 if "Float32" in msgtype else np.float64
    return T[msgtype](layout=layout, data=floats(rng, n).astype(dtype))


@pytest.mark.parametrize("kind", ["array", "array32"])
@pytest.mark.parametrize("selector", ["obs", "all", "2", "1-3", "4-6", "joints", "absent"])
def test_array_sources_equal_the_planners_reading_of_each_used_message(kind, selector):
    """The reader's Float64/Float32MultiArray sources (a layout at a time) against extract() on each
    message, under the reader's rule: the first used message that has the elements sets the width;
    messages of another width, undecodable ones and ones that lack the elements give NaN."""
    from tdmpc2_ros.bags.reader import SOURCE_MSGTYPES, _array_source

    text = f"{kind}:/a:{selector}"
    msgtype = SOURCE_MSGTYPES[kind]
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    raws = serialised([array_message(rng, msgtype) for _ in range(600)], msgtype, rng)
    raws[11], raws[12] = raws[11][:-5], b"\x07\x07" + raws[12][2:]  # truncated, garbled
    source = parse_source(text)
    used = np.sort(rng.choice(600, 400, replace=False))
    rows = {}
    for i in used:
        try:
            rows[int(i)] = extract(source, STORE.deserialize_cdr(raws[i], msgtype))
        except Exception:  # noqa: BLE001 — undecodable, or the elements are missing
            pass
    width = next(iter(rows.values())).size if rows else 1
    got = _array_source((msgtype, None, raws), source, used)
    assert got.shape == (600, width)
    want = np.stack([rows[i] if i in rows and rows[i].size == width else np.full(width, np.nan) for i in used])
    assert np.array_equal(got[used], want, equal_nan=True), text
    if selector != "absent":
        assert np.isfinite(want).all(axis=1).sum() > 20, text  # the comparison is not one of NaNs
