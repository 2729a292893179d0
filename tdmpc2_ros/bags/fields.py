"""Columns of float64 fields from a robot's own messages (JointState, JointTrajectory, Imu,
Odometry, ...), decoded many messages at a time.

A raw bag of a robot's topics holds one CDR message per tick per topic. Deserialising each with the
rosbags typestore costs about 20 us in Python, which kept the trainer's raw-bag ingest under 20k
transitions/s. Messages of one topic nearly always share their layout: the same joint names, frame
id and array lengths, so every float sits at the same byte offset. ``MessageColumns`` therefore walks
one message's bytes along the typestore's own field definitions (``_Walker``) to learn where each
float64 field lies, takes every other message of the same length whose layout bytes agree (the
strings, counts and integers; not the floats, the stamps or the padding) as one uint8 matrix, and
reads a field of all of them as one numpy column.

Float64MultiArray and Float32MultiArray sources (``array_source_blocks``) need no walker: bags/cdr.py
already decodes such messages a layout at a time, and extract() itself, run once per layout on the
element indices, says which columns a source takes.

Little-endian CDR (what ROS 2 records) is walked directly. A message the walker cannot read (big
endian, or one whose layout differs from every other) is handled on its own; one rosbags cannot
read either (truncated bytes) gives NaN, which the reader counts as malformed.

Which field a source or a command names is said twice, on purpose: here as a byte offset in a
layout (``source_offset``, ``command_columns``), and for live messages in ``runtime/observations.py:
extract`` and ``runtime/command_fields.py: command_vector``. test_bag_fields.py holds the two to the
same values on random messages. No ROS, no torch.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from tdmpc2_ros.bags.cdr import FLOAT64_MULTI_ARRAY, CdrError, decode_multiarrays
from tdmpc2_ros.runtime.command_fields import INTERFACES
from tdmpc2_ros.runtime.observations import AdapterError, Source, extract

_HEADER_LE = b"\x00\x01\x00\x00"
_U32 = struct.Struct("<I")
_SIZES = {"bool": 1, "byte": 1, "char": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
          "float32": 4, "int64": 8, "uint64": 8, "float64": 8}
_STAMPS = {"builtin_interfaces/msg/Time", "builtin_interfaces/msg/Duration"}  # vary per message, as floats do
_NAME, _BASE, _ARRAY, _SEQUENCE = 2, 1, 3, 4  # rosbags' Nodetype values


@dataclass(frozen=True)
class Layout:
    """Where one message's fields lie. Paths join field names with '.', sequence elements by index
    ('points.0.positions')."""

    floats: dict  # path -> (byte offset, count) of a float64 field, array or sequence
    strings: dict  # path -> str, or list[str] for a string array or sequence
    fixed: np.ndarray  # bool [message length]: the bytes another message must share to have this layout


class _Walker:
    """One little-endian CDR message, walked along the typestore's field definitions. Alignment is
    relative to the end of the 4-byte encapsulation header; an empty sequence has no padding."""

    def __init__(self, buf: bytes, fielddefs: dict):
        if len(buf) < 4 or buf[:4] != _HEADER_LE:
            raise CdrError("not a little-endian CDR message")
        self.buf, self.defs, self.pos = buf, fielddefs, 4
        self.floats: dict = {}
        self.strings: dict = {}
        self.fixed = np.zeros(len(buf), bool)
        self.fixed[:4] = True

    def layout(self, msgtype: str) -> Layout:
        self._message(msgtype, "", stamp=False)
        return Layout(self.floats, self.strings, self.fixed)

    def _take(self, n: int, align: int, fixed: bool) -> int:
        self.pos += -(self.pos - 4) % align
        start, self.pos = self.pos, self.pos + n
        if self.pos > len(self.buf):
            raise CdrError(f"message ends at byte {len(self.buf)}, a field needs {self.pos}")
        self.fixed[start : self.pos] = fixed
        return start

    def _count(self) -> int:
        return _U32.unpack_from(self.buf, self._take(4, 4, True))[0]

    def _string(self) -> str:
        n = self._count()
        start = self._take(n, 1, True)
        return self.buf[start : start + max(n - 1, 0)].decode("utf-8", "replace")

    def _message(self, msgtype: str, prefix: str, stamp: bool) -> None:
        if msgtype not in self.defs:
            raise CdrError(f"unknown message type {msgtype}")
        stamp = stamp or msgtype in _STAMPS
        for name, (kind, spec) in self.defs[msgtype][1]:
            path = prefix + name
            if kind == _NAME:
                self._message(spec, path + ".", stamp)
            elif kind == _BASE:
                self._base(spec[0], path, 1, stamp, sequence=False)
            elif kind in (_ARRAY, _SEQUENCE):
                (element_kind, element), length = spec
                count = self._count() if kind == _SEQUENCE else length
                if element_kind == _NAME:
                    for i in range(count):
                        self._message(element, f"{path}.{i}.", stamp)
                else:
                    self._base(element[0], path, count, stamp, sequence=True)
            else:
                raise CdrError(f"field {path}: unsupported field kind {kind}")

    def _base(self, typ: str, path: str, count: int, stamp: bool, sequence: bool) -> None:
        if typ == "string":
            values = [self._string() for _ in range(count)]
            self.strings[path] = values if sequence else values[0]
            return
        size = _SIZES.get(typ)
        if size is None:
            raise CdrError(f"field {path}: unsupported type {typ}")
        if count == 0:
            if typ == "float64":
                self.floats[path] = (self.pos, 0)
            return
        variable = stamp or typ in ("float32", "float64")  # data, not layout
        start = self._take(size * count, size, not variable)
        if typ == "float64":
            self.floats[path] = (start, count)


class MessageColumns:
    """Messages of one type, grouped once by layout; ``column(offset_of)`` then reads one float64
    field of every message (NaN where ``offset_of(layout)`` is None or the message is unreadable)."""

    def __init__(self, raws: Sequence[bytes], msgtype: str, store=None):
        if store is None:
            from tdmpc2_ros.bags.writer import typestore

            store = typestore()
        self.n, self.msgtype, self._store = len(raws), msgtype, store
        self.groups: list[tuple[Layout, np.ndarray, np.ndarray]] = []  # (layout, message indices, bytes [k, size])
        self.unreadable: list[int] = []
        lengths = np.fromiter(map(len, raws), np.int64, len(raws))
        order = np.argsort(lengths, kind="stable")
        for idx in np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1):
            if idx.size:
                self._group(raws, idx)

    def _group(self, raws, idx: np.ndarray) -> None:
        mat = np.frombuffer(b"".join([bytes(raws[i]) for i in idx]), np.uint8).reshape(idx.size, -1)
        while idx.size:
            try:
                layout = _Walker(mat[0].tobytes(), self._store.fielddefs).layout(self.msgtype)
            except CdrError:
                self._alone(raws[idx[0]], int(idx[0]))
                idx, mat = idx[1:], mat[1:]
                continue
            same = (mat[:, layout.fixed] == mat[0, layout.fixed]).all(axis=1)
            self.groups.append((layout, idx[same], mat[same]))
            idx, mat = idx[~same], mat[~same]

    def _alone(self, raw, i: int) -> None:
        """A message the walker cannot read: through rosbags to little-endian bytes, then walked."""
        try:
            msg = self._store.deserialize_cdr(bytes(raw), self.msgtype)
            buf = bytes(self._store.serialize_cdr(msg, self.msgtype))
            layout = _Walker(buf, self._store.fielddefs).layout(self.msgtype)
        except Exception:  # noqa: BLE001 — truncated or garbled bytes: the message is unreadable
            self.unreadable.append(i)
            return
        self.groups.append((layout, np.array([i]), np.frombuffer(buf, np.uint8).reshape(1, -1)))

    def column(self, offset_of: Callable[[Layout], int | None]) -> np.ndarray:
        out = np.full(self.n, np.nan)
        for layout, idx, mat in self.groups:
            offset = offset_of(layout)
            if offset is not None:
                out[idx] = np.ascontiguousarray(mat[:, offset : offset + 8]).view("<f8")[:, 0]
        return out


def _named(layout: Layout, names_path: str, values_path: str, joint: str, whole: bool) -> int | None:
    """The offset of `joint`'s value in a names / values pair of fields; `whole`: only where there is a
    value for every name (as command_vector asks of a command)."""
    names, (offset, count) = layout.strings.get(names_path), layout.floats.get(values_path, (0, 0))
    if not isinstance(names, list) or joint not in names or (whole and count != len(names)):
        return None
    i = names.index(joint)
    return offset + 8 * i if i < count else None


def source_offset(source: Source, layout: Layout) -> int | None:
    """Where a joint_state / imu / odometry source's value lies (runtime/observations.py: extract)."""
    if source.kind == "joint_state":
        return _named(layout, "name", source.field, source.joint, whole=False)
    path = source.field
    if source.kind == "odometry":  # pose.pose.* and twist.twist.* in the message
        section, _, rest = source.field.partition(".")
        path = f"{section}.{section}.{rest}"
    offset, count = layout.floats.get(path, (0, 0))
    return offset if count == 1 else None


def source_column(columns: MessageColumns, source: Source) -> np.ndarray:
    """A scalar source's value in every message, transformed as extract() transforms it (math.cos /
    math.sin element by element, so the trainer sees the planner's exact floats; NaN for an infinite
    angle, which extract() refuses)."""
    values = columns.column(lambda layout: source_offset(source, layout))
    if source.transform:
        f = getattr(math, source.transform)
        values = np.fromiter((f(v) if math.isfinite(v) else math.nan for v in values), np.float64, values.size)
    return values


def command_columns(columns: MessageColumns, kind: str, joints: Sequence[str], interface: str) -> np.ndarray:
    """A JointTrajectory's first point, or a JointState, as [n, len(joints)] commands in joints order
    (runtime/command_fields.py: command_vector); a row is all NaN where the message lacks a joint."""
    point_field, state_field = INTERFACES[interface]
    names, values = ("joint_names", f"points.0.{point_field}") if kind == "joint_trajectory" else ("name", state_field)

    def offset_of(layout: Layout, k: int) -> int | None:  # joint k's, where the message has every joint
        offsets = [_named(layout, names, values, j, whole=True) for j in joints]
        return None if None in offsets else offsets[k]

    return np.stack([columns.column(lambda layout, k=k: offset_of(layout, k)) for k in range(len(joints))],
                    axis=1).reshape(columns.n, len(joints))


def array_source_blocks(raws: Sequence[bytes], source: Source,
                        msgtype: str = FLOAT64_MULTI_ARRAY) -> list[tuple[np.ndarray, np.ndarray]]:
    """A Float64/Float32MultiArray source's elements, one block per layout: [(values [k, width], message
    indices [k])]. Messages that cannot be decoded, or lack what the source asks for, are in no block."""
    blocks, _ = decode_multiarrays(raws, msgtype)
    out = []
    for (dims, n), (values, index) in blocks.items():
        columns = _array_columns(source, dims, n)
        if columns is not None:
            out.append((values[:, columns], index))
    return out


def _array_columns(source: Source, dims, n: int) -> np.ndarray | None:
    """Which of a layout's n elements a source takes: extract() on a stand-in message whose data are
    the element indices, so a label, a range or 'all' means here what it means to the planner."""
    dim = [SimpleNamespace(label=label, size=size) for label, size in dims]
    stand_in = SimpleNamespace(layout=SimpleNamespace(dim=dim), data=np.arange(n, dtype=np.float64))
    try:
        return extract(source, stand_in).astype(np.int64)
    except AdapterError:
        return None
