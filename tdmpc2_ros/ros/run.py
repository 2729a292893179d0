"""How a tdmpc2_ros node process runs: start (or refuse with the reason), spin, stop cleanly.

Every node takes SIGINT and SIGTERM itself: the handler only sets a flag that the spin loop reads.
rclpy's own handlers would shut the context down at once, from inside the signal, and then raise a
KeyboardInterrupt at whatever line Python happens to be on (inside an except clause, inside
destroy_node), which turns a clean stop into a traceback. With the flag the loop ends between two
callbacks; `finish(node, executor, why)` then runs with the context still up (close a bag, write a
checkpoint), and `on_exit(node)` runs last, after the context is shut down.
"""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from tdmpc2_ros.ros import stop
from tdmpc2_ros.ros.params import warn_unknown_parameters


def set_up_or_destroy(node, setup: Callable[[], None]) -> None:
    """Finish a node's construction; one that fails half way (a bad parameter, a missing file) is
    destroyed before the error propagates, so its publishers and subscriptions do not outlive it."""
    try:
        setup()
    except BaseException:
        node.destroy_node()
        raise


def run_node(name: str, make_node: Callable, args=None,
             make_executor: Callable = SingleThreadedExecutor, done: Callable = lambda node: False,
             finish: Callable | None = None, on_exit: Callable | None = None) -> int:
    """0 on a clean stop, 1 if the node refused to start (the reason is logged as FATAL)."""
    stop.take_signals()  # before init (a node process took them before its imports already)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    try:
        try:
            node = make_node()
        except Exception as e:  # a bad parameter, an unusable path, a missing model: say why, exit non-zero
            rclpy.logging.get_logger(name).fatal(f"{name} refusing to start: {e}")
            return 1
        warn_unknown_parameters(node)  # every node's parameters are declared by now
        executor = make_executor()  # after rclpy.init: an executor needs the context
        executor.add_node(node)
        while rclpy.ok() and stop.requested() is None and not done(node):
            executor.spin_once(timeout_sec=0.1)
        if finish is not None:
            finish(node, executor, stop.requested() or "shutdown")
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        if finish is not None and node is not None:
            finish(node, executor, "interrupted")
        return 0
    except Exception:
        if not rclpy.ok():  # the context was shut down under the node (by its own code, or a launch): a clean stop
            return 0
        raise
    finally:
        stop.ignore_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if on_exit is not None and node is not None:
            on_exit(node)
