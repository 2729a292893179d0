#!/usr/bin/env bash
# Install everything tdmpc2_ros needs into the current Python environment (no ROS distro needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The versions the tests last passed with (constraints.txt, written by scripts/lock.sh), so that a
# new release upstream cannot change what a fresh machine gets. Where they do not install (another
# platform or Python), the newest versions requirements.txt allows, with a warning.
if ! "$PY" -m pip install --quiet -r requirements.txt -c constraints.txt; then
    echo "setup: the tested versions in constraints.txt do not install here; installing the newest that" \
         "requirements.txt allows instead (untested combination)" >&2
    "$PY" -m pip install --quiet -r requirements.txt
fi
"$PY" -m pip install --quiet --no-deps -e .
