"""Turns tdmpc2_ros.ros.bringup's node sets into launch_ros actions (shared by every launch file)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tdmpc2_ros.ros import bringup


def describe(set_name: str) -> LaunchDescription:
    actions = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
               for a in bringup.ARGUMENTS.values()]
    for spec in bringup.NODE_SETS[set_name]:
        actions.append(Node(
            package="tdmpc2_ros", executable=spec.executable, name=spec.name, output="screen",
            parameters=[bringup.params_path(spec), {p: LaunchConfiguration(a) for p, a in spec.arg_params.items()}],
            remappings=list(spec.remappings),
            condition=IfCondition(LaunchConfiguration(spec.condition)) if spec.condition else None,
        ))
    return LaunchDescription(actions)
