"""The TD-MPC2 algorithm in PyTorch. Imports no ROS; the ROS nodes never import this package."""
