"""What the ROS graph says about a topic that stays silent.

A subscription whose message type differs from the publishers' is never matched: DDS delivers nothing
and ROS logs nothing. A planner configured for a Float64MultiArray on a topic that carries JointState
would only ever say "no observation yet", and a controller waiting for JointTrajectory commands on the
topic a planner fills with Float64MultiArray would never move. These helpers name the type the other
side uses instead.

A subscription whose QoS a publisher cannot serve (a reliable subscription, a best-effort publisher) is
not matched either. DDS says so in an event only; `UnmatchedPublishers` turns it into a sentence that
names the parameter to check, and clears it when the graph shows that such publishers have left.
"""

from __future__ import annotations

import time

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import QoSCompatibility, qos_check_compatible


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


def incompatible_publishers(node, topic: str, subscription_qos) -> int | None:
    """How many of `topic`'s publishers offer a QoS that `subscription_qos` cannot match, as the graph
    shows them; None where the graph cannot be asked."""
    try:
        infos = node.get_publishers_info_by_topic(topic)
    except Exception:  # noqa: BLE001 — a graph query is a hint, never a reason to fail
        return None
    return sum(qos_check_compatible(i.qos_profile, subscription_qos)[0] == QoSCompatibility.ERROR for i in infos)


class UnmatchedPublishers:
    """Publishers on one subscription's topic whose QoS it cannot match, as a sentence naming the topic,
    the policy and the parameter to check ('' while there are none).

    DDS delivers none of their messages and reports them only in an event, when they appear: pass
    `events` to create_subscription. It sends nothing when they leave, so `check` (at each report) asks
    the graph: the sentence counts those still listed (the event's count is a running total), and clears
    once none is left. It waits GRACE_S after the event first: the graph may not list a publisher yet
    when its event comes.
    """

    GRACE_S = 1.0

    def __init__(self, node, topic: str, subscription_qos, parameter: str, report):
        self.node, self.topic, self.qos, self.parameter, self.report = node, topic, subscription_qos, parameter, report
        self.why, self._since, self._policy = "", 0.0, ""
        self.events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible)

    def _sentence(self, count: int) -> str:
        return (f"{count} publisher(s) on {self.topic} offer a QoS the subscription cannot match ({self._policy}): "
                f"none of their messages arrive; check {self.parameter}")

    def _on_incompatible(self, info) -> None:
        self._policy = info.last_policy_kind.name.removeprefix("RMW_QOS_POLICY_").lower()
        self.why = self._sentence(info.total_count)
        self._since = time.monotonic()
        self.report(self.why)

    def check(self) -> str:
        """The sentence while such a publisher is still in the graph; '' (said once in the log) once none is."""
        if not self.why or time.monotonic() - self._since < self.GRACE_S:
            return self.why
        listed = incompatible_publishers(self.node, self.topic, self.qos)
        if listed == 0:
            self.node.get_logger().info(f"no publisher on {self.topic} offers a QoS its subscription cannot match "
                                        f"any more (was: {self.why})")
            self.why = ""
        elif listed is not None:
            self.why = self._sentence(listed)
        return self.why
