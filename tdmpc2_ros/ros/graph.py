"""What the ROS graph says about a topic that stays silent.

A subscription whose message type differs from the publishers' is never matched: DDS delivers nothing
and ROS logs nothing. A planner configured for a Float64MultiArray on a topic that carries JointState
would only ever say "no observation yet". These helpers name the type the publishers use instead.
"""

from __future__ import annotations


def type_name(msg_class) -> str:
    """'std_msgs/msg/Float64MultiArray' for std_msgs.msg.Float64MultiArray."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"


def other_types(node, topic: str, expected: str) -> list[str]:
    """The message types of `topic`'s publishers other than `expected` ('pkg/msg/Type'), sorted."""
    try:
        infos = node.get_publishers_info_by_topic(topic)
    except Exception:  # noqa: BLE001 — a graph query is a hint, never a reason to fail
        return []
    return sorted({info.topic_type for info in infos} - {expected})


def mismatch_hint(node, topic: str, expected: str, parameter: str) -> str:
    """'' or a sentence naming the type `topic` is published as, for a log line or /diagnostics."""
    others = other_types(node, topic, expected)
    if not others:
        return ""
    return f"{topic} is published as {' and '.join(others)}, not {expected}: check {parameter}"
