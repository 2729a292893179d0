"""The robot side of the contract: load an exported planner graph and run it, one call per tick.

Nothing here imports torch: a robot needs only numpy and onnxruntime.
"""

from tdmpc2_ros.runtime.budget import PlanBudget
from tdmpc2_ros.runtime.contract import ModelContract, SpecMismatch, ModelLoadError, FORMAT_VERSION
from tdmpc2_ros.runtime.onnx_planner import OnnxPlanner

__all__ = ["PlanBudget", "ModelContract", "SpecMismatch", "ModelLoadError", "FORMAT_VERSION", "OnnxPlanner"]
