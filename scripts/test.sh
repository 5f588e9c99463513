#!/usr/bin/env bash
# Installs what the tests need (Python packages; Debian's chromium when missing)
# and runs every check CI runs: ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium for the browser tests (playwright drives it by path; it cannot
# download browsers here).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: chromium is missing; run: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

# Debian's redis-server for the scale-out tests (a real one per run, started by a fixture).
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "scripts/test.sh: redis-server is missing; run: sudo apt-get install redis-server" >&2
        exit 1
    fi
fi

python3 -m pip install -q -e '.[test]' --config-settings editable_mode=strict

ruff format --check .
ruff check .
mypy -p weaver.config -p weaver.cache -p weaver.session -p weaver.proxy
mypy tests loadtests
pytest "$@"
# The pure cores, each covered by its own unit tests (>= 95% of branches).
python3 scripts/core_coverage.py
