"""Metric logs: metrics.jsonl after a kill, TensorBoard's restart marker, non-finite steps."""

import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from scaled_ql import metrics, runs

GAMES = ["Breakout", "Pong"]


def _events(workdir):
  directory = os.path.join(workdir, "tensorboard")
  return [
    event
    for name in sorted(os.listdir(directory))
    for event in event_file_loader.EventFileLoader(os.path.join(directory, name)).Load()
  ]


def test_a_resumed_writer_drops_recomputed_rows_and_marks_the_restart(tmp_path):
  workdir = str(tmp_path)
  writer = metrics.MetricWriter(workdir)
  for step in (1, 2, 3, 4):
    writer.write(step, {"loss": float(step)})
  writer.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "lo')  # Killed while writing a line.
  # Resuming from the checkpoint at step 2: rows 3-4 will be recomputed, row 5 is cut short.
  writer = metrics.MetricWriter(workdir, start_step=2)
  writer.write(3, {"loss": 30.0})
  writer.close()
  rows = runs.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  # TensorBoard discards the earlier files' points from a SessionLog.START at step 3 on.
  starts = [e.step for e in _events(workdir) if e.HasField("session_log")]
  assert starts == [3]
  accumulator = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  accumulator.Reload()
  assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [(1, 1), (2, 2), (3, 30)]


def test_a_bad_line_inside_the_log_is_an_error_naming_it(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(json.dumps({"step": 1}) + "\n{oops\n" + json.dumps({"step": 3}) + "\n")
  with pytest.raises(ValueError, match="metrics.jsonl, line 2"):
    runs.read_jsonl(str(path))


def test_the_first_non_finite_step_of_a_window_is_named():
  finite = {"loss": np.float32(1.0), "per_game/td_loss": np.ones(2, np.float32)}
  bad_game = {"loss": np.float32(1.0), "per_game/td_loss": np.array([1.0, np.nan], np.float32)}
  window = [finite, finite, bad_game, {"loss": np.float32(np.inf), **bad_game}]
  with pytest.raises(metrics.NonFiniteMetricError, match=r"\(per_game/td_loss/Pong\) at step 12\."):
    metrics.raise_first_nonfinite(window, GAMES, first_step=10)
  assert metrics.all_finite(metrics.flatten(finite, GAMES))
  assert not metrics.all_finite(metrics.flatten(bad_game, GAMES))
