#!/usr/bin/env bash
# Creates .venv (if missing) and installs scaled_ql with its extras (EXTRAS, default "test";
# "tpu" on TPU hosts). Idempotent: a second run only checks that setup.py has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when setup.py changed since the last successful install.
EXTRAS=${EXTRAS:-test}
stamp=.venv/.scaled_ql_installed_${EXTRAS}
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "[setup] installing scaled_ql[${EXTRAS}] (the first run installs about 3.7 GB)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
  touch "$stamp"
fi
