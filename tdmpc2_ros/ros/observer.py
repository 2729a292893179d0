"""A watcher on a ROS domain for the commands that run node sets and report on them (demo, benchmarks).

It is a client like any other: its own rclpy context on the given domain, one node, one executor,
and bounded spinning. `planner_status` keeps the newest key/value table that a node reports on
/diagnostics under a given status name.
"""

from __future__ import annotations

import time


class Observer:
    def __init__(self, domain: int, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        self.ctx.init(domain_id=int(domain))
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def subscribe(self, msg_type, topic: str, callback, qos):
        return self.node.create_subscription(msg_type, topic, callback, qos)

    def publisher(self, msg_type, topic: str, qos):
        return self.node.create_publisher(msg_type, topic, qos)

    def status_table(self, status_prefix: str, on_update=None) -> dict:
        """A dict that always holds the newest /diagnostics values of the status whose name starts
        with status_prefix (e.g. 'tdmpc2_ros: planner'); on_update(table) runs after each refresh."""
        from diagnostic_msgs.msg import DiagnosticArray

        from tdmpc2_ros.ros import topics

        table: dict = {}

        def on_diag(msg):
            for status in msg.status:
                if status.name.startswith(status_prefix):
                    table.update({kv.key: kv.value for kv in status.values})
                    if on_update is not None:
                        on_update(table)

        self.subscribe(DiagnosticArray, topics.DIAGNOSTICS, on_diag, 10)
        return table

    def spin_until(self, predicate, timeout_s: float, step_s: float = 0.05) -> bool:
        """Spin until predicate() holds or timeout_s passes; returns predicate()."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not predicate():
            self.executor.spin_once(timeout_sec=step_s)
        return bool(predicate())

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.ctx.try_shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
