"""launch_pytest tests for launch/*.launch.py. They run on a ROS 2 machine where launch, launch_ros
and launch_pytest are installed. Elsewhere (no ROS distro: none of these are on PyPI) they are not
collected at all, so nothing here is ever counted as a pass; test/test_bringup.py covers the same
node sets through `tdmpc2-ros bringup` on every machine."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("launch_pytest") else ["test_*.py"]
