"""Fast CDR (de)serialisation of the std_msgs types the package records or reads, in numpy.

rosbag2 stores every message as its CDR bytes (the same bytes DDS carries and
``rclpy.serialization.serialize_message`` returns): a 4-byte encapsulation header (``00 01 00 00`` =
little endian) and the fields, each aligned to its size relative to the end of the header.

std_msgs/msg/Float64MultiArray:
    uint32 n_dims, n x {uint32 len, label bytes + NUL, pad to 4, uint32 size, uint32 stride},
    uint32 data_offset, uint32 n_data, pad to 8, n_data x float64
std_msgs/msg/Float32MultiArray: the same, the data padded to 4 and n_data x float32 (read, not written:
    a robot's own array topics may carry it).
std_msgs/msg/Float64: float64;  std_msgs/msg/Int64: int64 (12 bytes with the header; offset 0 is aligned).

Decoding is vectorised: messages of one length whose layout bytes agree (padding bytes excluded:
rclpy leaves them uninitialised) are joined into one uint8 matrix and their data read as one
float64 block, so a bag of 100k transition records decodes in a few numpy calls instead of 100k
Python deserialisations. Anything the fast path does not recognise (big-endian data, odd layouts)
falls back to a per-message parse, and big-endian messages to the rosbags typestore. Pure numpy.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

FLOAT64_MULTI_ARRAY = "std_msgs/msg/Float64MultiArray"
FLOAT32_MULTI_ARRAY = "std_msgs/msg/Float32MultiArray"
_ITEM = {FLOAT64_MULTI_ARRAY: "<f8", FLOAT32_MULTI_ARRAY: "<f4"}  # the data's element type
# Layouts of one message length that each get a block; messages of any further ones (a topic whose
# every message differs, say) are parsed one at a time, so a pathological bag costs no more than this
# many passes over its messages.
_LAYOUTS_PER_LENGTH = 16
FLOAT64 = "std_msgs/msg/Float64"
INT64 = "std_msgs/msg/Int64"

_HEADER_LE = b"\x00\x01\x00\x00"
_U32 = struct.Struct("<I")


class CdrError(ValueError):
    """Bytes that are not a well-formed CDR message of the expected type."""


def _typestore():
    from tdmpc2_ros.bags.writer import typestore

    return typestore()


# --- encoding ----------------------------------------------------------------------------------
def encode_float64_multiarray(dims: Sequence[tuple[str, int]], data) -> bytes:
    """CDR bytes of a Float64MultiArray with layout dims [(label, size)] (stride = size), data_offset 0."""
    out = bytearray(_HEADER_LE)

    def align(n: int) -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % n))

    out += _U32.pack(len(dims))
    for label, size in dims:
        raw = str(label).encode("utf-8") + b"\x00"
        align(4)
        out += _U32.pack(len(raw)) + raw
        align(4)
        out += struct.pack("<II", int(size), int(size))
    align(4)
    values = np.ascontiguousarray(np.asarray(data, "<f8").reshape(-1))
    out += struct.pack("<II", 0, values.shape[0])
    align(8)
    out += values.tobytes()
    return bytes(out)


def encode_float64(value: float) -> bytes:
    return _HEADER_LE + struct.pack("<d", float(value))


def encode_int64(value: int) -> bytes:
    return _HEADER_LE + struct.pack("<q", int(value))


# --- decoding ----------------------------------------------------------------------------------
def _parse_multiarray(buf, itemsize: int = 8) -> tuple[tuple[tuple[str, int], ...], int, int, list[tuple[int, int]]]:
    """-> (dims, data_start, n_data, padding ranges) of one little-endian Float64MultiArray (itemsize 8)
    or Float32MultiArray (itemsize 4)."""
    mv = memoryview(buf)
    size = len(mv)
    if size < 16 or mv[0] != 0 or mv[1] != 1:
        raise CdrError("not a little-endian CDR message")
    pos, pads, dims = 4, [], []

    def u32(p: int) -> int:
        if p + 4 > size:
            raise CdrError("message ends inside its layout")
        return _U32.unpack_from(mv, p)[0]

    def align(p: int, n: int) -> int:
        q = p + (-(p - 4) % n)
        if q != p:
            pads.append((p, q))
        return q

    ndim = u32(pos)
    pos += 4
    if ndim > 10_000:
        raise CdrError(f"implausible dimension count {ndim}")
    for _ in range(ndim):
        pos = align(pos, 4)
        length = u32(pos)
        pos += 4
        if pos + length > size:
            raise CdrError("message ends inside a dimension label")
        label = bytes(mv[pos : pos + max(length - 1, 0)]).decode("utf-8", "replace")
        pos += length
        pos = align(pos, 4)
        dim_size = u32(pos)
        pos += 8  # size, stride
        dims.append((label, int(dim_size)))
    pos = align(pos, 4)
    pos += 4  # data_offset
    n = u32(pos)
    pos += 4
    pos = align(pos, itemsize)
    if pos + itemsize * n > size:
        raise CdrError(f"message holds {size - pos} data bytes, its length field says {itemsize * n}")
    return tuple(dims), pos, int(n), pads


def decode_multiarray(buf, msgtype: str = FLOAT64_MULTI_ARRAY) -> tuple[tuple[tuple[str, int], ...], np.ndarray]:
    """One Float64/Float32MultiArray -> (dims, data as float64, which holds a float32 exactly).
    Big-endian messages go through the rosbags typestore."""
    mv, item = memoryview(buf), _ITEM[msgtype]
    if len(mv) >= 2 and mv[0] == 0 and mv[1] == 0:  # big endian: rare, let rosbags handle it
        msg = _typestore().deserialize_cdr(bytes(mv), msgtype)
        dims = tuple((d.label, int(d.size)) for d in msg.layout.dim)
        return dims, np.asarray(msg.data, np.float64)
    dims, start, n, _ = _parse_multiarray(mv, int(item[-1]))
    return dims, np.frombuffer(mv, item, n, start).astype(np.float64)


def decode_float64_multiarrays(raws: Sequence[bytes]) -> tuple[dict, list[tuple[int, str]]]:
    """Float64MultiArray messages -> decode_multiarrays' blocks and errors."""
    return decode_multiarrays(raws, FLOAT64_MULTI_ARRAY)


def decode_multiarrays(raws: Sequence[bytes], msgtype: str = FLOAT64_MULTI_ARRAY) -> tuple[dict, list[tuple[int, str]]]:
    """Many Float64/Float32MultiArray messages -> ({(dims, n): (data [k, n] float64, indices [k] into
    raws)}, [(index, error)]).

    Messages with the same layout and the same number of values end up in one block, in their input
    order (n is part of the key: arrays without a layout, or whose layout does not add up, still
    differ in length).
    """
    item = _ITEM[msgtype]
    itemsize = int(item[-1])
    blocks: dict[tuple, list] = {}
    errors: list[tuple[int, str]] = []
    if not raws:
        return {}, errors
    lengths = np.fromiter(map(len, raws), np.int64, len(raws))
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    slow: list[int] = []
    for idx in np.split(order, bounds):
        mat = np.frombuffer(b"".join([raws[i] for i in idx]), np.uint8).reshape(len(idx), len(raws[idx[0]]))
        for _ in range(_LAYOUTS_PER_LENGTH):  # several layouts may share a length: one block each
            if not idx.size:
                break
            try:
                dims, start, n, pads = _parse_multiarray(mat[0].tobytes(), itemsize)
            except CdrError:  # big endian or malformed: on its own, below
                slow.append(int(idx[0]))
                idx, mat = idx[1:], mat[1:]
                continue
            mask = np.ones(mat.shape[1], bool)
            for a, b in pads:
                mask[a:b] = False
            mask[start:] = False  # compare the layout only: not the data, nor trailing bytes if any
            same = (mat[:, mask] == mat[0, mask]).all(axis=1)
            data = np.ascontiguousarray(mat[same, start : start + itemsize * n]).view(item).astype(np.float64)
            blocks.setdefault((dims, n), []).append((data.reshape(int(same.sum()), n), idx[same]))
            idx, mat = idx[~same], mat[~same]
        slow.extend(idx.tolist())
    for i in slow:
        try:
            dims, data = decode_multiarray(raws[i], msgtype)
        except Exception as e:  # noqa: BLE001 — a malformed message is reported, not fatal
            errors.append((i, f"{type(e).__name__}: {e}"))
            continue
        blocks.setdefault((dims, data.size), []).append((data.reshape(1, -1), np.array([i])))
    out = {}
    for key, parts in blocks.items():
        data = np.concatenate([p[0] for p in parts])
        index = np.concatenate([p[1] for p in parts])
        keep = np.argsort(index, kind="stable")
        out[key] = (data[keep], index[keep])
    return out, errors


def _decode_scalars(raws: Sequence[bytes], msgtype: str, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Float64 / Int64 messages -> (values, ok mask). Vectorised for the 12-byte little-endian form."""
    n = len(raws)
    dtype = np.float64 if fmt == "<f8" else np.int64
    values = np.zeros(n, dtype)
    ok = np.zeros(n, bool)
    if n == 0:
        return values, ok
    lengths = np.fromiter(map(len, raws), np.int64, n)
    fast = np.flatnonzero(lengths == 12)
    if fast.size:
        mat = np.frombuffer(b"".join([raws[i] for i in fast]), np.uint8).reshape(-1, 12)
        le = (mat[:, 0] == 0) & (mat[:, 1] == 1)
        values[fast[le]] = np.ascontiguousarray(mat[le, 4:12]).view(fmt).reshape(-1)
        ok[fast[le]] = True
    for i in np.flatnonzero(~ok):
        try:
            values[i] = _typestore().deserialize_cdr(bytes(raws[i]), msgtype).data
            ok[i] = True
        except Exception:  # noqa: BLE001
            pass
    return values, ok


def decode_float64s(raws: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """std_msgs/Float64 messages -> (values float64, decoded-ok mask)."""
    return _decode_scalars(raws, FLOAT64, "<f8")


def decode_int64s(raws: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """std_msgs/Int64 messages -> (values int64, decoded-ok mask)."""
    return _decode_scalars(raws, INT64, "<i8")


def header_stamps(raws: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The ``header.stamp`` of messages that begin with a std_msgs/Header (JointState, Imu, Odometry,
    ...) -> (stamps in ns int64, decoded-ok mask). The stamp is the first field: int32 sec and uint32
    nanosec right after the encapsulation header, in either byte order."""
    n = len(raws)
    stamps, ok = np.zeros(n, np.int64), np.zeros(n, bool)
    if n == 0:
        return stamps, ok
    lengths = np.fromiter(map(len, raws), np.int64, n)
    have = np.flatnonzero(lengths >= 12)
    if have.size:
        mat = np.frombuffer(b"".join([bytes(raws[i][:12]) for i in have]), np.uint8).reshape(-1, 12)
        for flag, order in ((1, "<"), (0, ">")):  # encapsulation 00 01: CDR little endian; 00 00: big
            rows = (mat[:, 0] == 0) & (mat[:, 1] == flag)
            sec = np.ascontiguousarray(mat[rows, 4:8]).view(order + "i4").reshape(-1).astype(np.int64)
            nanosec = np.ascontiguousarray(mat[rows, 8:12]).view(order + "u4").reshape(-1).astype(np.int64)
            good = nanosec < 10**9
            stamps[have[rows][good]] = sec[good] * 10**9 + nanosec[good]
            ok[have[rows][good]] = True
    return stamps, ok
