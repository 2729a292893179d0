#!/usr/bin/env bash
# Install everything tdmpc2_ros needs into the current Python environment (no ROS distro needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet -r requirements.txt
"$PY" -m pip install --quiet --no-deps -e .
