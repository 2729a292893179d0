"""Transitions to and from rosbag2 bags (MCAP or sqlite3), with numpy and rosbags only (no ROS, no torch).

- ``writer.BagWriter``: CDR messages -> a sequence of complete bags, split by time or size; the open
  bag lives under a hidden ``.<name>.partial`` folder until it is closed and renamed atomically.
- ``reader``: transition records -> ``Transition`` objects or columns -> episode fragments for
  ``ReplayBuffer.add_episode``; raw observation/command/reward topics -> episodes by timestamp
  alignment; bad bags raise ``BagSkipped(path, reason)``.
- ``ledger``: ``IngestLedger`` (which bags were ingested, surviving restarts) and ``closed_bags``.
- ``cdr``: vectorised CDR encode/decode of std_msgs Float64MultiArray, Float64 and Int64.
- ``fields``: float64 fields of a robot's own messages (JointState, Imu, ...) as columns, by byte offset.
- ``info``: what a bag or a folder of bags holds, and what the ingest ledger says of each (``tdmpc2-ros info``).

The ROS side is ``tdmpc2_ros.ros.recorder_node``.
"""

from tdmpc2_ros.bags.cdr import encode_float64, encode_float64_multiarray, encode_int64
from tdmpc2_ros.bags.ledger import IngestLedger, bag_identity, closed_bags, partial_bags
from tdmpc2_ros.bags.reader import (
    TRANSITION_TOPIC,
    BagSkipped,
    Episode,
    RawEpisodes,
    Records,
    episodes_from_arrays,
    episodes_from_bag,
    episodes_from_raw,
    episodes_from_records,
    read_record_arrays,
    read_records,
)
from tdmpc2_ros.bags.writer import BagWriter

__all__ = ["BagWriter", "BagSkipped", "Episode", "IngestLedger", "RawEpisodes", "Records", "TRANSITION_TOPIC",
           "bag_identity", "closed_bags", "encode_float64", "encode_float64_multiarray", "encode_int64",
           "episodes_from_arrays", "episodes_from_bag", "episodes_from_raw", "episodes_from_records",
           "partial_bags", "read_record_arrays", "read_records"]
