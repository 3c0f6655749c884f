#!/usr/bin/env bash
# Creates .venv (if missing) and installs scaled_ql with its test extras.
# Idempotent: a second run only checks that the installed package is current.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when setup.py changed since the last successful install.
stamp=.venv/.scaled_ql_installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "[setup] installing scaled_ql[test] (first run downloads ~2 GB of wheels)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
