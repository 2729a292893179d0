"""Standard messages the nodes build from arrays."""

from __future__ import annotations

import numpy as np
from std_msgs.msg import Float64MultiArray, MultiArrayDimension


def segmented_array(dims, data):
    """A Float64MultiArray whose layout names each segment (inverse of runtime/observations.py: segments_of)."""
    msg = Float64MultiArray(data=np.asarray(data, np.float64).tolist())
    msg.layout.dim = [MultiArrayDimension(label=label, size=size, stride=size) for label, size in dims]
    return msg
