"""ros/graph.py's UnmatchedPublishers on a stand-in node: a DDS incompatible-QoS event becomes a
sentence, which stays while the graph still lists such a publisher and clears once none is left."""

from __future__ import annotations

from types import SimpleNamespace

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from tdmpc2_ros.ros import qos
from tdmpc2_ros.ros.graph import UnmatchedPublishers, incompatible_publishers

BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
VOLATILE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class StandInNode:
    """The graph query and the logger UnmatchedPublishers uses."""

    def __init__(self):
        self.publishers, self.infos, self.fail = [], [], False

    def get_publishers_info_by_topic(self, topic):
        if self.fail:
            raise RuntimeError("graph unavailable")
        return [SimpleNamespace(qos_profile=q) for q in self.publishers]

    def get_logger(self):
        return SimpleNamespace(info=self.infos.append)


def event(count: int, policy: str):
    return SimpleNamespace(total_count=count, last_policy_kind=SimpleNamespace(name=f"RMW_QOS_POLICY_{policy}"))


def test_the_graph_counts_the_publishers_a_subscription_cannot_match():
    node = StandInNode()
    node.publishers = [BEST_EFFORT, qos.EVENTS, VOLATILE, qos.LATCHED]
    assert incompatible_publishers(node, "/t", qos.EVENTS) == 1  # reliable: the best-effort one
    assert incompatible_publishers(node, "/t", qos.LATCHED) == 3  # transient local: every volatile one too
    assert incompatible_publishers(node, "/t", qos.SENSOR) == 0  # best effort, volatile: any publisher
    node.fail = True
    assert incompatible_publishers(node, "/t", qos.EVENTS) is None


def test_the_sentence_stays_while_such_a_publisher_is_listed_and_clears_once_none_is():
    node, reports = StandInNode(), []
    unmatched = UnmatchedPublishers(node, "/cmd", qos.EVENTS, "command_reliability", reports.append)
    assert unmatched.check() == "" and unmatched.events.incompatible_qos is not None
    unmatched.events.incompatible_qos(event(3, "RELIABILITY"))  # DDS's running total: 3 so far

    def why(count):
        return (f"{count} publisher(s) on /cmd offer a QoS the subscription cannot match (reliability): none of "
                f"their messages arrive; check command_reliability")

    assert reports == [why(3)] and unmatched.why == why(3)
    # Right after the event the graph may not list the publisher yet: nothing clears in GRACE_S.
    assert unmatched.check() == why(3)
    unmatched._since -= UnmatchedPublishers.GRACE_S
    node.publishers = [BEST_EFFORT, qos.EVENTS]
    assert unmatched.check() == why(1)  # the one still listed
    node.fail = True  # a graph that cannot be asked clears nothing
    node.publishers = []
    assert unmatched.check() == why(1) and node.infos == []
    node.fail = False
    node.publishers = [qos.EVENTS]  # the best-effort one left; a reliable one stays
    assert unmatched.check() == "" and unmatched.why == ""
    assert node.infos == [f"no publisher on /cmd offers a QoS its subscription cannot match any more (was: {why(1)})"]
    assert unmatched.check() == "" and len(node.infos) == 1  # said once
