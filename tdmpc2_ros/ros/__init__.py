"""ROS 2 adapters: thin nodes around the pure core. Topics in, arrays to the core, arrays out, topics out.

Nothing here (nor anything it imports) may import torch: the robot side needs only rclpy, numpy
and onnxruntime.
"""
