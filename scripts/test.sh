#!/usr/bin/env bash
# Set up a virtual environment with the test dependencies and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/protocol -q`.
#
# Tests against PostgreSQL and Redis start throw-away servers from the Debian
# packages (`apt-get install postgresql redis-server`); where those are missing the
# tests are skipped with that hint, except in CI (CI=true), where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv …" >&2
    python3 -m venv .venv
fi
echo "installing Kilowatt and its test dependencies into .venv …" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
