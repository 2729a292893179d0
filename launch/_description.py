"""Turns tdmpc2_ros.ros.bringup's node sets into launch_ros actions (shared by every launch file).

The nodes are made when the launch runs (OpaqueFunction), from the same `bringup.resolve` that
`tdmpc2-ros bringup` uses, so both follow one rule: a node's condition argument decides whether it
starts, and an empty argument leaves the parameter to the node's YAML file. Values are typed the way
`-p name:=value` types them (YAML), by `bringup.typed`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from tdmpc2_ros.ros import bringup


def describe(set_name: str) -> LaunchDescription:
    actions = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
               for a in bringup.ARGUMENTS.values()]

    def nodes(context):
        overrides = {name: LaunchConfiguration(name).perform(context) for name in bringup.ARGUMENTS}
        return [Node(package="tdmpc2_ros", executable=spec.executable, name=spec.name, output="screen",
                     parameters=[*bringup.param_files(spec), bringup.typed(params)], remappings=list(spec.remappings))
                for spec, params in bringup.resolve(set_name, overrides)]

    actions.append(OpaqueFunction(function=nodes))
    return LaunchDescription(actions)
