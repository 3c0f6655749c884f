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
  # A venv made before rlax was a dependency may hold the stable tensorflow-probability, which
  # shares tfp-nightly's package directory and breaks rlax: remove it, then (re)install.
  if .venv/bin/python -m pip show --quiet tensorflow-probability 2>/dev/null; then
    .venv/bin/python -m pip uninstall --quiet -y tensorflow-probability tfp-nightly
  fi
  .venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
  if [ "$EXTRAS" = test ]; then
    # The DQN Replay format reference: only its replay-buffer module is used (it needs numpy,
    # tensorflow, gin and absl, which are installed); its requirements would bring back the
    # stable tensorflow-probability.
    .venv/bin/python -m pip install --quiet --no-deps dopamine-rl==4.1.2
  fi
  touch "$stamp"
fi
