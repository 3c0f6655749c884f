"""Training metrics on the host: TensorBoard event files and a `metrics.jsonl` log.

Per-game metrics arrive as `[num_games]` vectors and are written one scalar per game
(`per_game/td_loss/Breakout`), so TensorBoard groups them by metric.

In a bucket (`--workdir=gs://...`) objects cannot be appended to: the rows go to chunks of
`ROWS_PER_CHUNK` rows (`runs.metrics_files`), the newest one rewritten whole at each flush, and
the TensorBoard event file is rewritten whole at each flush (as TensorFlow's own GCS files
do) and replaced by a new one with each new chunk, so a flush uploads at most a chunk's rows
twice, however long the run.
"""

import json
import math
import os
import sys
import time
import types
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.tensorflow_stub.io import gfile as tensorboard_gfile
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from scaled_ql import runs

# The event writer would import all of TensorFlow (8 s, and its CUDA probing in the log) for
# file I/O; TensorBoard's documented `compat.notf` switch selects its TF-free stub instead.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

ROWS_PER_CHUNK = 256  # Rows per metrics chunk in a bucket: bounds what one flush uploads.


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


class _EpathEventFiles:
  """TensorBoard's TF-free file layer (`tensorflow_stub.io.gfile`) for `gs://`, via etils.epath.

  It has no `append`: TensorBoard's stub then rewrites the whole event file at each flush,
  one object write.
  """

  def exists(self, filename) -> bool:
    return epath.Path(os.fsdecode(filename)).exists()

  def isdir(self, dirname) -> bool:
    return epath.Path(os.fsdecode(dirname)).is_dir()

  def join(self, path, *paths) -> str:
    return os.fspath(epath.Path(os.fsdecode(path), *map(os.fsdecode, paths)))

  def makedirs(self, path) -> None:
    epath.Path(os.fsdecode(path)).mkdir(parents=True, exist_ok=True)

  def write(self, filename, file_content, binary_mode: bool = False) -> None:
    path = epath.Path(os.fsdecode(filename))
    if binary_mode:
      path.write_bytes(bytes(file_content))
    else:
      path.write_text(file_content)


tensorboard_gfile.register_filesystem("gs", _EpathEventFiles())


def _drop_rows_after(workdir: str, step: int) -> None:
  """Drops the rows logged after `step` (by a killed run) and a line cut short.

  Files are handled newest first: those left with no row are deleted, the newest one with rows
  is rewritten atomically, so a kill part way leaves the log a prefix of what it was.
  """
  files = runs.metrics_files(workdir)
  while files:
    kept = [row for row in runs.read_jsonl(files[-1]) if row["step"] <= step]
    if kept or len(files) == 1:
      runs.write_atomically(files[-1], "".join(json.dumps(row) + "\n" for row in kept))
      return
    files.pop().unlink()


class MetricWriter:
  """Writes scalars to TensorBoard (`{workdir}/tensorboard`) and the run's metrics log.

  The log is `{workdir}/metrics.jsonl`, appended to, on a local disk; chunks
  `{workdir}/metrics/{n}.jsonl` in a bucket, or in a run that already has chunks (moved from a
  bucket), so that its rows stay in order. `runs.read_metrics` reads either.
  Only process 0 of a multi-host run should write; the others pass `enabled=False`.
  """

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    """Opens the writers; rows logged after `start_step` by a killed run are dropped.

    Args:
      workdir: the run's directory (a local path or a `gs://` URI).
      start_step: the step training (re)starts from; later logged rows came from steps
        that are being recomputed after a resume.
      enabled: False on all but one process of a multi-host run.
    """
    self._enabled = enabled
    if not enabled:
      return
    workdir = os.fspath(workdir)
    self.tensorboard_dir = os.fspath(epath.Path(workdir) / runs.TENSORBOARD_SUBDIR)
    _drop_rows_after(workdir, start_step)
    chunks = runs.metrics_chunks(workdir)
    chunked = runs.is_uri(workdir) or bool(chunks)
    # Each writer starts a new chunk, after the one `_drop_rows_after` may have rewritten.
    self._workdir, self._chunk = workdir, chunks[-1][0] + 1 if chunks else 0
    self._chunk_lines, self._unflushed, self._jsonl = [], 0, None
    if chunked:
      runs.metrics_chunk(workdir, self._chunk).parent.mkdir(parents=True, exist_ok=True)
    self._events = EventFileWriter(self.tensorboard_dir)
    if start_step > 0:
      # TensorBoard's restart marker: it drops the earlier points from this step on, which
      # the killed run logged after its checkpoint and this run recomputes.
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      self._events.add_event(event_pb2.Event(wall_time=time.time(), step=start_step + 1,
                                             session_log=start))  # fmt: skip
    if not chunked:
      self._jsonl = (epath.Path(workdir) / runs.METRICS_FILE).open("a")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    summary = summary_pb2.Summary(
      value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    )
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    line = json.dumps({"step": step, **scalars}) + "\n"
    if self._jsonl is not None:
      self._jsonl.write(line)
    else:
      self._chunk_lines.append(line)
      self._unflushed += 1

  def flush(self) -> None:
    if not self._enabled:
      return
    self._events.flush()
    if self._jsonl is not None:
      self._jsonl.flush()
    elif self._unflushed:
      path = runs.metrics_chunk(self._workdir, self._chunk)
      runs.write_atomically(path, "".join(self._chunk_lines))  # One object: the whole chunk.
      self._unflushed = 0
      if len(self._chunk_lines) >= ROWS_PER_CHUNK:
        self._chunk, self._chunk_lines = self._chunk + 1, []
        if runs.is_uri(self._workdir):  # A new event file too, so that no upload keeps growing.
          self._events.close()
          self._events = EventFileWriter(self.tensorboard_dir)

  def close(self) -> None:
    if not self._enabled:
      return
    self.flush()
    self._events.close()
    if self._jsonl is not None:
      self._jsonl.close()
