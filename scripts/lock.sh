#!/usr/bin/env bash
# Rewrite constraints.txt: the exact version of every package requirements.txt installs, as this
# environment has them. Run it after the tests pass on a fresh setup, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip freeze --exclude-editable > "$tmp/freeze.txt"
# Resolve requirements.txt afresh, held to what is installed: the report lists the whole closure.
if ! "$PY" -m pip install --dry-run --ignore-installed --quiet -r requirements.txt -c "$tmp/freeze.txt" \
        --report "$tmp/report.json" 2> "$tmp/pip.log"; then
    cat "$tmp/pip.log" >&2
    exit 1
fi
"$PY" - "$tmp/report.json" > constraints.txt <<'PYEOF'
import json
import platform
import sys

report = json.load(open(sys.argv[1]))
# torch is pinned in requirements.txt itself (its wheels carry local tags such as +cpu); the build
# tools are pip's own business.
skip = {"torch", "setuptools", "pip", "wheel"}
pins = sorted({(i["metadata"]["name"].lower(), i["metadata"]["version"].split("+")[0]) for i in report["install"]
               if i["metadata"]["name"].lower() not in skip})
print("# The versions the tests last passed with (scripts/lock.sh wrote this file, on Python "
      f"{platform.python_version()}, {platform.machine()}).")
print("# scripts/setup.sh installs requirements.txt held to these; where they do not install, it says so and")
print("# installs the newest versions requirements.txt allows.")
for name, version in pins:
    print(f"{name}=={version}")
PYEOF
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
