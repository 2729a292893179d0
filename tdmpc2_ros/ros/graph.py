"""What the ROS graph says about a topic that stays silent.

A subscription whose message type differs from the publishers' is never matched: DDS delivers nothing
and ROS logs nothing. A planner configured for a Float64MultiArray on a topic that carries JointState
would only ever say "no observation yet", and a controller waiting for JointTrajectory commands on the
topic a planner fills with Float64MultiArray would never move. These helpers name the type the other
side uses instead.

A subscription whose QoS a publisher cannot serve (a reliable subscription, a best-effort publisher) is
not matched either. DDS says so in an event only; `unmatched_qos_events` turns it into a sentence that
names the parameter to check.
"""

from __future__ import annotations

from rclpy.event_handler import SubscriptionEventCallbacks


def type_name(msg_class) -> str:
    """'std_msgs/msg/Float64MultiArray' for std_msgs.msg.Float64MultiArray."""
    return f"{msg_class.__module__.split('.')[0]}/msg/{msg_class.__name__}"


def other_types(node, topic: str, expected: str, side: str = "published") -> list[str]:
    """The message types of `topic`'s publishers (side 'published') or subscribers ('subscribed')
    other than `expected` ('pkg/msg/Type'), sorted."""
    query = node.get_publishers_info_by_topic if side == "published" else node.get_subscriptions_info_by_topic
    try:
        infos = query(topic)
    except Exception:  # noqa: BLE001 — a graph query is a hint, never a reason to fail
        return []
    return sorted({info.topic_type for info in infos} - {expected})


def mismatch_hint(node, topic: str, expected: str, parameter: str, side: str = "published") -> str:
    """'' or a sentence naming the type `topic` is published (or subscribed) as, for a log line or
    /diagnostics."""
    others = other_types(node, topic, expected, side)
    if not others:
        return ""
    return f"{topic} is {side} as {' and '.join(others)}, not {expected}: check {parameter}"


def unmatched_qos_events(topic: str, parameter: str, report) -> SubscriptionEventCallbacks:
    """Event callbacks for a subscription to `topic`: when publishers offer a QoS it cannot match,
    `report` gets a sentence naming them, the policy and `parameter`."""
    def on_incompatible(info):
        policy = info.last_policy_kind.name.removeprefix("RMW_QOS_POLICY_").lower()
        report(f"{info.total_count} publisher(s) on {topic} offer a QoS the subscription cannot match ({policy}): "
               f"none of their messages arrive; check {parameter}")

    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)
