"""How a tdmpc2_ros node process runs: start (or refuse with the reason), spin, stop cleanly.

Nodes that must finish work on SIGINT/SIGTERM (close a bag, write a checkpoint) take the signals
themselves (`own_signals`): rclpy's handlers would shut the context down at once, before the node
could act. `finish(node, executor, why)` then runs with the context still up; `on_exit(node)` runs
last, after the context is shut down.
"""

from __future__ import annotations

import signal
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


def set_up_or_destroy(node, setup: Callable[[], None]) -> None:
    """Finish a node's construction; one that fails half way (a bad parameter, a missing file) is
    destroyed before the error propagates, so its publishers and subscriptions do not outlive it."""
    try:
        setup()
    except BaseException:
        node.destroy_node()
        raise


def run_node(name: str, make_node: Callable, args=None, own_signals: bool = False,
             make_executor: Callable = SingleThreadedExecutor, done: Callable = lambda node: False,
             finish: Callable | None = None, on_exit: Callable | None = None) -> int:
    """0 on a clean stop, 1 if the node refused to start (the reason is logged as FATAL)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else SignalHandlerOptions.ALL)
    stop = {"signal": None}
    if own_signals:
        def on_signal(signum, _frame):
            stop["signal"] = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    node = executor = None
    try:
        try:
            node = make_node()
        except Exception as e:  # a bad parameter, an unusable path, a missing model: say why, exit non-zero
            rclpy.logging.get_logger(name).fatal(f"{name} refusing to start: {e}")
            return 1
        executor = make_executor()  # after rclpy.init: an executor needs the context
        executor.add_node(node)
        while rclpy.ok() and stop["signal"] is None and not done(node):
            executor.spin_once(timeout_sec=0.1)
        if finish is not None:
            finish(node, executor, signal.Signals(stop["signal"]).name if stop["signal"] else "shutdown")
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        if finish is not None and node is not None and own_signals:
            finish(node, executor, "interrupted")
        return 0
    except Exception:
        if not rclpy.ok():  # a SIGINT between start-up and spinning shut the context: a clean stop
            return 0
        raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if on_exit is not None and node is not None:
            on_exit(node)
