"""The accelerator benchmark on a machine without one: it says so, measures nothing and still
ends in its three result lines, so that a script collecting `RESULT` lines finds them."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_accelerator_benchmark_says_there_is_no_accelerator_on_a_cpu():
  result = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / "accelerator_step.py")],
    capture_output=True, text=True, timeout=300, cwd=ROOT,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith("no accelerator: JAX sees only")
  assert lines[-3:] == [
    "RESULT accel_bf16_mfu nan",
    "RESULT accel_bf16_vs_f32 nan",
    "RESULT accel_loop_vs_step nan",
  ]
