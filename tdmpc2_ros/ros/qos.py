"""QoS profiles of the topic contract (see README, "Topic contract")."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Observations: best effort, keep last 5 (rclpy's sensor-data profile). A late sample is useless.
SENSOR = qos_profile_sensor_data

# Commands: reliable, keep last 1 — the newest command is the only one that matters.
COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)

# Events a consumer must not miss (rewards, episode boundaries): reliable with a deep queue.
EVENTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)

# Announcements a late joiner must still see (model updates): reliable, transient local.
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

# A subscription's reliability by name, as parameters give it (recorder topics, reward_node's commands).
# A reliable subscription loses nothing of a reliable publisher but hears nothing of a best-effort one.
RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
