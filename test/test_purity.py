"""Import boundaries: the robot-side runtime needs no torch; the core needs no ROS."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import tdmpc2_ros

PACKAGE = Path(tdmpc2_ros.__file__).resolve().parent
ROOT = PACKAGE.parent


def _python(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet); it must succeed. Its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runtime_import_does_not_import_torch():
    code = (
        "import sys, tdmpc2_ros.runtime\n"
        "from tdmpc2_ros.runtime import OnnxPlanner, PlanBudget, ModelContract, SpecMismatch, ModelLoadError\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m.startswith('rclpy'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"


def test_runtime_plans_with_torch_unavailable(small_onnx):
    """A robot without torch installed loads and runs an exported planner (torch imports are made
    to fail in the child process)."""
    path, contract = small_onnx
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import numpy as np\n"
        "from tdmpc2_ros.runtime import OnnxPlanner\n"
        f"p = OnnxPlanner({str(path)!r}, obs_dim={contract.obs.dim}, action_dim={contract.action.dim})\n"
        "r = p.plan(np.zeros(p.obs_dim, np.float32), explore=True)\n"
        "assert r.action.shape == (p.action_dim,) and np.all(np.abs(r.action) <= 1)\n"
        "assert r.mean.shape == (p.contract.budget.horizon, p.action_dim)\n"
        "print(repr(float(r.value)))\n"
    )
    assert np.isfinite(float(_python(code)))


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_never_imports_ros():
    files = sorted((PACKAGE / "core").rglob("*.py"))
    assert len(files) >= 10
    for f in files:
        text = f.read_text()
        assert "rclpy" not in text, f"{f} mentions rclpy"
        mods = _imported_modules(f)
        ros = {m for m in mods if m.split(".")[0] in {"rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs", "geometry_msgs"}}
        assert not ros, f"{f} imports {ros}"


def test_runtime_sources_never_import_torch_at_module_level():
    for f in sorted((PACKAGE / "runtime").rglob("*.py")):
        mods = _imported_modules(f)
        assert not {m for m in mods if m.split(".")[0] in {"torch", "rclpy"}}, f
        assert not {m for m in mods if m.startswith("tdmpc2_ros.core") or m.startswith("tdmpc2_ros.training")}, f


def test_core_import_does_not_import_ros():
    code = (
        "import sys\n"
        "import tdmpc2_ros.core.agent, tdmpc2_ros.core.export, tdmpc2_ros.core.planners\n"
        "assert not [m for m in sys.modules if m.startswith('rclpy')]\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"


def test_bags_and_recorder_never_import_torch():
    """The bag layer (numpy + rosbags) and the recorder node (+ rclpy) run on a robot without torch;
    the bag layer needs no ROS either."""
    bag_files = sorted((PACKAGE / "bags").rglob("*.py"))
    assert len(bag_files) >= 5
    for f in bag_files + [PACKAGE / "ros" / "recorder_node.py"]:
        mods = _imported_modules(f)
        assert not {m for m in mods if m.split(".")[0] == "torch"}, f
        assert not {m for m in mods if m.startswith("tdmpc2_ros.core") or m.startswith("tdmpc2_ros.training")}, f
        if f.parent.name == "bags":
            assert not {m for m in mods if m.split(".")[0] in {"rclpy", "std_msgs"}}, f
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import tdmpc2_ros.bags\n"
        "assert not [m for m in sys.modules if m.startswith('rclpy')], 'bags imported rclpy'\n"
        "import tdmpc2_ros.ros.recorder_node\n"
        "bad = sorted(m for m in sys.modules if m.startswith('torch.') or m.startswith('tdmpc2_ros.core'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"


def test_info_readers_need_neither_torch_nor_ros():
    """`tdmpc2-ros info` reads models, bags and run folders on any machine (a robot's too)."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import tdmpc2_ros.training.run_info, tdmpc2_ros.runtime.model_info, tdmpc2_ros.bags.info\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('rclpy', 'torch.', 'tdmpc2_ros.core')))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"


def _imported_names(path: Path) -> set[str]:
    """Modules a file imports, with `from pkg import mod` also counted as pkg.mod."""
    names = _imported_modules(path)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_trainer_side_boundaries():
    """The learner (training/offline.py) needs no ROS: trainer_node and `tdmpc2-ros train --bags`
    share it. trainer_node may import torch; the robot-side nodes never import the trainer side."""
    offline = PACKAGE / "training" / "offline.py"
    assert "rclpy" not in offline.read_text()
    ros = {"rclpy", "rosidl_runtime_py", "std_msgs", "std_srvs", "diagnostic_msgs", "sensor_msgs", "geometry_msgs"}
    mods = _imported_names(offline)
    assert not {m for m in mods if m.split(".")[0] in ros or m.startswith("tdmpc2_ros.ros")}, mods
    trainer_side = ("tdmpc2_ros.training", "tdmpc2_ros.ros.trainer_node", "tdmpc2_ros.core", "torch")
    for name in ("planner_node", "sim_node", "recorder_node", "reward_node"):
        mods = _imported_names(PACKAGE / "ros" / f"{name}.py")
        assert not {m for m in mods if m.startswith(trainer_side)}, (name, mods)
    assert "tdmpc2_ros.training.offline" in _imported_names(PACKAGE / "ros" / "trainer_node.py")
    code = (
        "import sys\n"
        "import tdmpc2_ros.training.offline\n"
        "bad = sorted(m for m in sys.modules if m.startswith('rclpy') or m.startswith('tdmpc2_ros.ros'))\n"
        "assert not bad, bad\n"
        "import tdmpc2_ros.ros.trainer_node\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import tdmpc2_ros.ros.planner_node, tdmpc2_ros.ros.recorder_node, tdmpc2_ros.ros.sim_node\n"
        "import tdmpc2_ros.ros.reward_node\n"
        "bad = sorted(m for m in sys.modules if m.startswith('tdmpc2_ros.training') or m == 'tdmpc2_ros.ros.trainer_node')\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    assert _python(code) == "ok"
