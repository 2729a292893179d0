"""Fixed-budget planners over the learned world model, each one exportable as a single ONNX graph.

- ``base``: what all planners share: noise layout, policy-prior trajectories, value of a sequence,
  elite selection. (This is the planner's inner loop.)
- ``mppi``: the reference's default, a softmax-weighted refit of the elites.
- ``cem``: a uniform refit over the elites; executes the best elite.
- ``gradient``: gradient ascent on the action sequences through the model.
"""

from tdmpc2_ros.core.planners.base import Planner
from tdmpc2_ros.core.planners.cem import CEMPlanner
from tdmpc2_ros.core.planners.gradient import GradientPlanner
from tdmpc2_ros.core.planners.mppi import MPPIPlanner

PLANNERS = {"mppi": MPPIPlanner, "cem": CEMPlanner, "gradient": GradientPlanner}


def make_planner(model, budget, discount: float) -> Planner:
    return PLANNERS[budget.planner](model, budget, discount)


__all__ = ["Planner", "MPPIPlanner", "CEMPlanner", "GradientPlanner", "PLANNERS", "make_planner"]
