"""``tdmpc2-ros call NAME [true|false]``: the package's services, from a machine without the ``ros2`` command.

On a ROS 2 machine this is ``ros2 service call``; where only the PyPI rclpy wheels are installed
(as here), there is no other way to ask a running node to roll back, stop, split its bag or
export. The four services of the topic contract (README):

- ``rollback``: ``/planner_node/rollback`` (std_srvs/Trigger), back to the previous model version;
- ``enable true|false``: ``/planner_node/enable`` (std_srvs/SetBool), plan, or send the stop command
  and then nothing;
- ``split``: ``/recorder_node/split`` (std_srvs/Trigger), close the open bag now;
- ``export``: ``/trainer_node/export`` (std_srvs/Trigger), export, validate and announce a version
  now (answered when done: minutes).

The domain is ``ROS_DOMAIN_ID``'s, as for every node; ``--service`` names a remapped or namespaced one.
"""

from __future__ import annotations

from dataclasses import dataclass


class CallError(RuntimeError):
    """No such service answered (not running, another domain, another name)."""


@dataclass(frozen=True)
class Service:
    path: str
    kind: str  # "Trigger" or "SetBool"
    what: str
    answer_s: float  # how long an answer may take


SERVICES = {
    "rollback": Service("/planner_node/rollback", "Trigger", "the planner returns to the previous model version", 10.0),
    "enable": Service("/planner_node/enable", "SetBool", "true: the planner plans; false: one stop command, then "
                                                         "nothing", 10.0),
    "split": Service("/recorder_node/split", "Trigger", "the recorder closes its open bag now", 30.0),
    "export": Service("/trainer_node/export", "Trigger", "the trainer exports, validates and announces a version now",
                      1800.0),
}


def parse_value(name: str, value: str | None) -> bool | None:
    """enable's true/false; the other services take none. ValueError names what was wrong."""
    if SERVICES[name].kind != "SetBool":
        if value is not None:
            raise ValueError(f"{name} takes no value (got {value!r})")
        return None
    words = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}
    if value is None or value.lower() not in words:
        raise ValueError(f"{name} needs true or false (got {value!r})")
    return words[value.lower()]


def call(name: str, value: bool | None = None, path: str = "", wait_s: float = 10.0,
         answer_s: float | None = None) -> tuple[bool, str]:
    """(success, message) of one call; CallError if no such service appears within `wait_s`."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import SetBool, Trigger

    service = SERVICES[name]
    path = path or service.path
    answer_s = service.answer_s if answer_s is None else answer_s
    kind = SetBool if service.kind == "SetBool" else Trigger
    context = rclpy.Context()
    context.init()
    try:
        node = rclpy.create_node("tdmpc2_ros_call", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = node.create_client(kind, path)
        if not client.wait_for_service(timeout_sec=wait_s):
            raise CallError(f"no service {path} ({kind.__name__}) answered within {wait_s:g} s on ROS domain "
                            f"{context.get_domain_id()}: is the node running, with this ROS_DOMAIN_ID?")
        request = kind.Request(data=value) if kind is SetBool else kind.Request()
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=answer_s)
        if not future.done():
            raise CallError(f"{path} did not answer within {answer_s:g} s")
        response = future.result()
        return bool(response.success), str(response.message)
    finally:
        context.try_shutdown()
