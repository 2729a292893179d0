"""Default topic names of the contract. Every one of them is a parameter and can be remapped."""

JOINT_STATES = "/joint_states"  # sensor_msgs/JointState, SENSOR QoS, stamped with sim/robot time
OBSERVATION = "/tdmpc2/observation"  # std_msgs/Float64MultiArray, SENSOR QoS, the task observation
REWARD = "/tdmpc2/reward"  # std_msgs/Float64, EVENTS QoS, reward of the step that just ended
EPISODE = "/tdmpc2/episode"  # std_msgs/Int64, EVENTS QoS, index of the episode that starts now
EPISODE_RETURN = "/tdmpc2/episode_return"  # std_msgs/Float64, EVENTS QoS, at each episode end
COMMAND = "/tdmpc2_controller/commands"  # std_msgs/Float64MultiArray, COMMAND QoS (ros2_control style)
CLOCK = "/clock"  # rosgraph_msgs/Clock
DIAGNOSTICS = "/diagnostics"  # diagnostic_msgs/DiagnosticArray
TRANSITION = "/tdmpc2/transition"  # std_msgs/Float64MultiArray, EVENTS QoS, one record per executed step
MODEL_UPDATE = "/tdmpc2/model_update"  # std_msgs/String (JSON announcement), LATCHED QoS (transient local)
