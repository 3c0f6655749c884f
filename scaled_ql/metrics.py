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


def check_finite(flat: Mapping[str, float], first_step: int, last_step: int) -> None:
  """Raises NonFiniteMetricError naming the metrics and the step window."""
  bad = sorted(name for name, value in flat.items() if not math.isfinite(value))
  if bad:
    raise NonFiniteMetricError(
      f"Non-finite training metrics ({', '.join(bad[:8])}) at a step in [{first_step}, "
      f"{last_step}]. The last checkpoint before step {first_step} is intact; lower the "
      "learning rate or set max_grad_norm and resume."
    )


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
    self.tensorboard_dir = os.path.join(workdir, "tensorboard")
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.jsonl_path):
      kept = [row for row in read_jsonl(self.jsonl_path) if row["step"] <= start_step]
      with open(self.jsonl_path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in kept)
    self._events = EventFileWriter(self.tensorboard_dir)
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


def read_jsonl(path: str) -> list[dict]:
  """Reads a `metrics.jsonl` file back (for reports and tests)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def steps_with(workdir: str, prefix: str) -> set[int]:
  """Steps whose logged row in `{workdir}/metrics.jsonl` has a metric starting with `prefix`."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return set()
  return {row["step"] for row in read_jsonl(path) if any(k.startswith(prefix) for k in row)}
