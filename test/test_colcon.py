"""The package builds with colcon (ament_python) and its installed planner_node starts from the
install space, as `ros2 run tdmpc2_ros planner_node` would start it on a ROS 2 machine."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from ros_harness import REPO, next_domain, node_env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for rel in files:
        if rel.startswith("test/") or not (REPO / rel).is_file():
            continue
        dst = ws / "src" / "tdmpc2_ros" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    out = subprocess.run(["colcon", "build", "--event-handlers", "console_direct-"], cwd=ws, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return ws


def sourced(ws, command: str) -> list[str]:
    return ["bash", "-c", f"source {ws}/install/setup.bash && exec {command}"]  # exec: signals reach the node


def clean_env(domain: int) -> dict:
    env = node_env(domain)
    env.pop("PYTHONPATH", None)  # only what the install space provides
    return env


def test_install_space_has_nodes_launch_config(workspace):
    share = workspace / "install/tdmpc2_ros/share/tdmpc2_ros"
    lib = workspace / "install/tdmpc2_ros/lib/tdmpc2_ros"
    from tdmpc2_ros.ros.bringup import NODE_SETS

    # Every node a launch file may start (`ros2 run` finds it there), and every launch and config file.
    for exe in {spec.executable for specs in NODE_SETS.values() for spec in specs} | {"tdmpc2-ros"}:
        assert (lib / exe).is_file(), exe
    shipped = [p.relative_to(REPO) for p in (*REPO.glob("launch/*.py"), *REPO.glob("config/*.yaml"))]
    for f in [*shipped, "package.xml"]:
        assert (share / f).is_file(), f
    assert (workspace / "install/tdmpc2_ros/share/ament_index/resource_index/packages/tdmpc2_ros").is_file()
    # Run from the workspace: python -c puts the working directory (here: the checkout) first on sys.path.
    where = subprocess.run(sourced(workspace, "python3 -c 'import tdmpc2_ros; print(tdmpc2_ros.__file__)'"),
                           env=clean_env(next_domain()), capture_output=True, text=True, check=True, cwd=workspace).stdout
    assert str(workspace / "install") in where


def test_installed_planner_node_starts(workspace, small_onnx):
    path, _ = small_onnx
    cmd = (f"{workspace}/install/tdmpc2_ros/lib/tdmpc2_ros/planner_node --ros-args -p model_path:={path} "
           f"-p ladder_runs:=3 -p ladder_warmup:=1")
    proc = subprocess.Popen(sourced(workspace, cmd), env=clean_env(next_domain()), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=workspace)
    lines = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            if "planning with" in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    log = "".join(lines) + rest
    assert "planning with" in log, log[-3000:]
    # The installed node reads its parameters' defaults from the installed config/ and share dir.
    assert proc.returncode == 0, log[-3000:]
