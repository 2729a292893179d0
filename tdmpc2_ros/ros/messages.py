"""Standard messages the nodes build from arrays."""

from __future__ import annotations

import numpy as np
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension

# The message type of each observation source kind (runtime/observations.py), for the nodes that
# subscribe to observation_sources: planner_node and reward_node.
SOURCE_MESSAGES = {"array": Float64MultiArray, "array32": Float32MultiArray, "joint_state": JointState, "imu": Imu,
                   "odometry": Odometry}


def segmented_array(dims, data):
    """A Float64MultiArray whose layout names each segment (inverse of runtime/observations.py: segments_of)."""
    msg = Float64MultiArray(data=np.asarray(data, np.float64).tolist())
    msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=size) for label, size in dims]
    return msg
