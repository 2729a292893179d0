"""ament_python package: `colcon build` on a ROS 2 machine, or `pip install -e .` without a distro."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = "tdmpc2_ros"


def tree(folder):
    """(share/tdmpc2_ros/<dir>, [files]) for every directory under folder, so models/ keeps its layout."""
    out = []
    for root, _, files in os.walk(folder):
        keep = [os.path.join(root, f) for f in files if not f.startswith(".")]
        if keep:
            out.append((os.path.join("share", PACKAGE, root), keep))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        *tree("models"),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    extras_require={
        # The robot side needs only numpy + onnxruntime (+ rclpy from ROS or the PyPI ROS wheels).
        "robot": ["onnxruntime"],
        "record": ["rosbags"],  # recorder_node and tdmpc2_ros.bags
        "gpu": ["onnxruntime-gpu"],
        "openvino": ["onnxruntime-ep-openvino"],  # execution_provider: openvino (Intel CPUs, x86-64)
        "train": ["torch==2.13.0", "onnx", "onnxscript", "mujoco==3.17.0", "dm-control==1.0.50", "tqdm", "matplotlib", "imageio", "rosbags"],
    },
    zip_safe=True,
    maintainer="tdmpc2_ros developers",
    maintainer_email="dev@tdmpc2-ros.invalid",
    description="TD-MPC2 world-model control for ROS 2",
    license="MIT",
    entry_points={
        "console_scripts": [
            "tdmpc2-ros = tdmpc2_ros.cli:main",
            "planner_node = tdmpc2_ros.ros.entry:planner_node",
            "sim_node = tdmpc2_ros.ros.entry:sim_node",
            "recorder_node = tdmpc2_ros.ros.entry:recorder_node",
            "trainer_node = tdmpc2_ros.ros.entry:trainer_node",
            "reward_node = tdmpc2_ros.ros.entry:reward_node",
        ],
    },
)
