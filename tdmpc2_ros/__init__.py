"""tdmpc2_ros: TD-MPC2 world-model control for ROS 2.

Sub-packages, by what imports them:
- ``core``: the TD-MPC2 algorithm in PyTorch (world model, losses, buffer, planners, export). No ROS.
- ``runtime``: what a robot needs to act: the exported ONNX planner and its contract. numpy and
  onnxruntime only, no torch, no ROS.
- ``envs``, ``training``: dm_control environments and the direct (ROS-free) trainer.
"""

__version__ = "0.1.0"
