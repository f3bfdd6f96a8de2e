#!/usr/bin/env bash
# Runs the server tests (tests/server/test_server.py) against a real `nanoflow serve`.
# Usage: tests/server/run.sh [path/to/nanoflow] [pytest args...]
# The first run creates a virtual environment next to the binary (pyenv/) with the official
# `openai` client and pytest from PyPI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-${NANOFLOW_BIN:-$root/build/nanoflow}}"
[ $# -gt 0 ] && shift
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
venv="${NANOFLOW_PYENV:-$(dirname "$bin")/pyenv}"
if ! "$venv/bin/python" -c "import openai, pytest" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openai pytest
fi
cd "$root"
NANOFLOW_BIN="$bin" exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/server" "$@"
