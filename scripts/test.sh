#!/usr/bin/env bash
# Set up and run the whole test suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl}
exec "${PYTHON:-python3}" -m pytest test -q -p no:cacheprovider "$@"
