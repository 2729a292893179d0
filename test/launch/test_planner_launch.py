"""ros2 launch tdmpc2_ros planner.launch.py in lockstep for one episode: both nodes start, the
planner reports its model, the sim logs the episode's return and exits cleanly."""

from pathlib import Path

import launch_pytest
import pytest
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_pytest.tools import process as process_tools

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "planner.launch.py"


@launch_pytest.fixture
def planner_launch():
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH)),
        launch_arguments={"mode": "lockstep", "max_episodes": "1", "control_rate_hz": "2.0"}.items(),
    )
    return LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=planner_launch)
async def test_one_lockstep_episode(launch_context):
    sim = next(a for a in launch_context.launch_description_entities if hasattr(a, "process_details"))
    await process_tools.wait_for_output(sim, lambda out: "episode 0 return" in out, timeout=600)
