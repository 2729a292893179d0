#!/usr/bin/env bash
# Set up, then run the demo: MuJoCo sim + planner with the shipped model, in real time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec "${PYTHON:-python3}" -m tdmpc2_ros.cli demo "$@"
