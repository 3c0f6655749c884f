"""data_prep/download.sh: the gsutil commands for games x runs x suffixes (dry run)."""

import os
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "data_prep", "download.sh")


def _dry_run(*args):
  result = subprocess.run(
    ["bash", SCRIPT, "--dry_run", *args], capture_output=True, text=True, check=False
  )
  return result.returncode, result.stdout.splitlines(), result.stderr


def test_suffix_ranges():
  rc, lines, _ = _dry_run(
    "--output_dir=/d", "--games=Pong,MsPacman", "--runs=1-2", "--suffixes=0-1,49"
  )
  assert rc == 0
  copies = [line for line in lines if line.startswith("gsutil")]
  assert len(copies) == 2 * 2 * 3
  assert copies[0] == (
    r"gsutil -m cp gs://atari-replay-datasets/dqn/Pong/1/replay_logs/\*_ckpt.0.gz /d/Pong/1/replay_logs/"
  )
  assert any(
    "MsPacman/2/replay_logs/\\*_ckpt.49.gz /d/MsPacman/2/replay_logs/" in c for c in copies
  )
  assert "mkdir -p /d/Pong/1/replay_logs" in lines


@pytest.mark.parametrize("suffixes,count", [("first20", 10), ("all", 1)])
def test_named_selections(suffixes, count):
  rc, lines, _ = _dry_run("--output_dir=/d", "--games=Breakout", f"--suffixes={suffixes}")
  copies = [line for line in lines if line.startswith("gsutil")]
  assert rc == 0 and len(copies) == count
  if suffixes == "first20":
    assert copies[-1].endswith(r"replay_logs/\*_ckpt.9.gz /d/Breakout/1/replay_logs/")
  else:
    assert (
      copies[0]
      == r"gsutil -m cp gs://atari-replay-datasets/dqn/Breakout/1/replay_logs/\* /d/Breakout/1/replay_logs/"
    )


@pytest.mark.parametrize(
  "args",
  [["--games=Pong"], ["--output_dir=/d"], ["--output_dir=/d", "--games=Pong", "--suffixes=a-b"]],
)
def test_bad_arguments(args):
  rc, _, err = _dry_run(*args)
  assert rc == 2 and "download.sh:" in err
