"""Training metrics on the host: TensorBoard event files and a `metrics.jsonl` log.

Per-game metrics arrive as `[num_games]` vectors and are written one scalar per game
(`per_game/td_loss/Breakout`), so TensorBoard groups them by metric.
"""

import json
import math
import os
import sys
import time
import types
from collections.abc import Mapping, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from scaled_ql import runs

# The event writer would import all of TensorFlow (8 s, and its CUDA probing in the log) for
# file I/O; TensorBoard's documented `compat.notf` switch selects its TF-free stub instead.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


class NonFiniteMetricError(FloatingPointError):
  """A training metric became NaN or infinite."""


def flatten(metrics: Mapping[str, np.ndarray], games: Sequence[str]) -> dict[str, float]:
  """Turns scalars and `[num_games]` vectors into a flat {name: float} dict."""
  flat = {}
  for name, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 0:
      flat[name] = float(value)
    elif value.shape == (len(games),):
      flat.update({f"{name}/{game}": float(v) for game, v in zip(games, value, strict=True)})
    else:
      raise ValueError(f"Metric {name!r} has shape {value.shape}; expected () or ({len(games)},).")
  return flat


def all_finite(flat: Mapping[str, float]) -> bool:
  return all(math.isfinite(value) for value in flat.values())


def raise_first_nonfinite(
  window: Sequence[Mapping[str, np.ndarray]], games: Sequence[str], first_step: int
) -> None:
  """Raises NonFiniteMetricError naming the first step with a non-finite metric.

  Args:
    window: host metrics of consecutive steps, the first being step `first_step`.
    games: the game names of per-game vectors.
    first_step: the step of `window[0]`.
  """
  for step, step_metrics in enumerate(window, start=first_step):
    bad = sorted(name for name, value in flatten(step_metrics, games).items()
                 if not math.isfinite(value))  # fmt: skip
    if bad:
      raise NonFiniteMetricError(
        f"Non-finite training metrics ({', '.join(bad[:8])}) at step {step}. The last "
        f"checkpoint (before step {first_step}) is intact; lower the learning rate or set "
        "optimizers.make_optimizer.max_grad_norm, and resume."
      )
  raise ValueError("raise_first_nonfinite: every metric of the window is finite.")


class MetricWriter:
  """Writes scalars to TensorBoard (`{workdir}/tensorboard`) and `{workdir}/metrics.jsonl`.

  Only process 0 of a multi-host run should write; the others pass `enabled=False`.
  """

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    """Opens the writers; rows logged after `start_step` by a killed run are dropped.

    Args:
      workdir: the run's directory.
      start_step: the step training (re)starts from; later rows of `metrics.jsonl` came
        from steps that are being recomputed after a resume.
      enabled: False on all but one process of a multi-host run.
    """
    self._enabled = enabled
    if not enabled:
      return
    self.tensorboard_dir = os.path.join(workdir, runs.TENSORBOARD_SUBDIR)
    self.jsonl_path = os.path.join(workdir, runs.METRICS_FILE)
    if os.path.exists(self.jsonl_path):
      kept = [row for row in runs.read_jsonl(self.jsonl_path) if row["step"] <= start_step]
      runs.write_atomically(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in kept))
    self._events = EventFileWriter(self.tensorboard_dir)
    if start_step > 0:
      # TensorBoard's restart marker: it drops the earlier points from this step on, which
      # the killed run logged after its checkpoint and this run recomputes.
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self._events.add_event(event_pb2.Event(wall_time=time.time(), step=start_step + 1,
                                             session_log=start))  # fmt: skip
    self._jsonl = open(self.jsonl_path, "a")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    summary = summary_pb2.Summary(
      value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    )
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")

  def flush(self) -> None:
    if self._enabled:
      self._events.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._enabled:
      self._events.close()
      self._jsonl.close()
