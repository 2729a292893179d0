"""Direct (ROS-free) training against dm_control, with checkpoints, evaluation and learning curves."""
