#!/usr/bin/env bash
# Runs the whole test suite (set-up included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest tests "$@"
