"""Helpers for tests that run real ROS 2 nodes: isolated DDS domains, bounded spinning, subprocess
environments. Each test uses its own ROS_DOMAIN_ID so parallel or leftover nodes never cross-talk."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

REPO = Path(__file__).resolve().parents[1]
_domains = itertools.count(100 + (os.getpid() % 50) * 2)


def next_domain() -> int:
    return next(_domains) % 230


def node_env(domain: int) -> dict:
    """Environment for a node subprocess: the checkout on the path, its own domain, localhost only."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl",
            "PYTHONUNBUFFERED": "1"}


def yaml_value(v) -> str:
    """A Python value as a YAML flow value for a --params-file."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, list)):
        return json.dumps(v)  # JSON strings and lists are YAML flow values
    return repr(v)


def console_script(name: str) -> list[str]:
    """The command of an installed console script, as pip writes it: `from <module> import <func>;
    sys.exit(<func>())`, for the entry point the installed package declares (setup.py). `ros2 run` and
    launch files start a node this way. Fails if the package is not installed with that entry point."""
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name=name)
    module, func = ep.value.split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def start_node_process(node: str, domain: int, tmp_path, via: str = "module", **params) -> subprocess.Popen:
    """The node with `params` in a parameter file, on its own domain: started as `python -m
    tdmpc2_ros.ros.<node>` (the bringup's way) or, via="console_script", as its console script."""
    lines = [f"{node}:", "  ros__parameters:"] + [f"    {k}: {yaml_value(v)}" for k, v in params.items()]
    params_file = Path(tmp_path) / f"{node}.yaml"
    params_file.write_text("\n".join(lines) + "\n")
    if via not in ("module", "console_script"):
        raise ValueError(f"via must be 'module' or 'console_script', not {via!r}")
    start = console_script(node) if via == "console_script" else [sys.executable, "-m", f"tdmpc2_ros.ros.{node}"]
    cmd = start + ["--ros-args", "--params-file", str(params_file)]
    return subprocess.Popen(cmd, cwd=REPO, env=node_env(domain), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish_process(proc: subprocess.Popen, sig=None, timeout: float = 60.0, what: str = "node") -> tuple[int, str]:
    """Signal the process (if given), wait for it, return (exit code, output); fail if it hangs."""
    import pytest

    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"{what} did not exit within {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


class LineReader:
    """A node process's output read on a thread (a readline would block the test), so the test can
    wait for a line such as "planning with" before it acts, and still get everything at the end."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines = proc, []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, limit_s: float = 120.0) -> bool:
        end = time.monotonic() + limit_s
        while time.monotonic() < end and text not in self.text():
            if self.proc.poll() is not None:
                self.thread.join(timeout=5)
                break
            time.sleep(0.05)
        return text in self.text()

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the process (fail if it hangs); its exit code and all of its output."""
        import pytest

        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.thread.join(timeout=5)
            pytest.fail(f"the process did not exit within {timeout} s:\n{self.text()[-4000:]}")
        self.thread.join(timeout=10)
        return self.proc.returncode, self.text()


@contextlib.contextmanager
def cleaned_up(*procs: subprocess.Popen, ros=None):
    """The test's body; afterwards every node process still running is killed and `ros` closed, so a
    failing assertion leaves no process or DDS participant behind for the next test."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if ros is not None:
            ros.close()


_LADDER_CACHE: dict = {}


def small_ladder(tmp_path_factory) -> Path:
    """A two-rung model folder (cartpole dims, random perturbed 1M weights), exported once per run."""
    if "path" not in _LADDER_CACHE:
        from core_helpers import SMALL_OBS_DIM, make_model
        from tdmpc2_ros.core.export import export_ladder
        from tdmpc2_ros.runtime import PlanBudget

        folder = tmp_path_factory.mktemp("ladder")
        budgets = [PlanBudget(iterations=3, num_samples=128, num_elites=16, num_pi_trajs=8),
                   PlanBudget(iterations=2, num_samples=64, num_elites=8, num_pi_trajs=8)]
        export_ladder(make_model("1M", SMALL_OBS_DIM, 1, seed=3), budgets, 0.99, folder, task="cartpole-swingup",
                      action_low=(-1.0,), action_high=(1.0,))
        _LADDER_CACHE["path"] = folder
    return _LADDER_CACHE["path"]


class Ros:
    """An rclpy context on its own domain with an executor; spin_until never waits forever."""

    def __init__(self, domain: int | None = None):
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.domain = next_domain() if domain is None else domain
        self.context = rclpy.Context()
        self.context.init(domain_id=self.domain)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str):
        return self.add(rclpy.create_node(name, context=self.context))

    def spin_until(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds: float):
        self.spin_until(lambda: False, seconds)

    def close(self):
        for n in self.nodes:
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown()
        self.context.try_shutdown()


def record_warnings(node) -> list[str]:
    """The texts of the warnings `node` logs from now on (they are still logged)."""
    warnings, logger = [], node.get_logger()

    class Recording:
        def __getattr__(self, name):
            return getattr(logger, name)

        def warning(self, text, **kw):
            warnings.append(text)
            return logger.warning(text, **kw)

    node._logger = Recording()  # rclpy's Node.get_logger() returns this attribute
    return warnings
