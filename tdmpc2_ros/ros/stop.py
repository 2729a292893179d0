"""A node process's stop signals: SIGINT and SIGTERM only set a flag, which the spin loop reads (see
run.py for why). Kept free of heavy imports, so that a node started as a process takes the signals
before its own imports (rclpy, onnxruntime, torch: up to a few seconds), and a stop that arrives then
is a clean stop too, not a KeyboardInterrupt traceback from inside an import."""

from __future__ import annotations

import signal

_state = {"signal": None, "taken": False}  # signals are per process, and so is this: one node per process


def _on_signal(signum, _frame):
    _state["signal"] = signum


def take_signals() -> None:
    """Route SIGINT and SIGTERM to the flag (once; a signal already recorded is kept)."""
    if not _state["taken"]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
        _state["taken"] = True


def ignore_signals() -> None:
    """The stop is under way: later signals have nothing left to stop. Ignored, not defaulted: Python
    puts its handlers back to the default as the interpreter exits, and a second Ctrl-C landing then
    would kill a process that had stopped cleanly (exit -2 instead of 0)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def requested() -> str | None:
    """The name of the signal that asked for the stop (SIGINT, SIGTERM), or None. Long waits during a
    node's start-up poll it too (the spin loop is not running yet to end them)."""
    return signal.Signals(_state["signal"]).name if _state["signal"] is not None else None
