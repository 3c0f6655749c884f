"""What a multi-controller run (one process per host, `jax.distributed`) needs beyond the mesh.

Every process runs the same program; a jitted computation on global arrays is a collective that
all processes must enter. The helpers below are collectives too (except `host_local` on
replicated arrays): call them on every process, in the same order.

  host_local(tree)      parameters usable by this process alone (e.g. to act in its own
                        environments), without touching other processes' devices.
  allgather_json(obj)   every process's JSON-serialisable value, in process order.
  barrier(name)         returns once every process has reached it.
  PreemptionNotice      SIGTERM (a preemption notice, `scancel`, `kill`) asks the run to
                        checkpoint and stop at a step every process agrees on.

With one process they cost nothing and return their input.
"""

import json
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


def host_local(tree):
  """A copy of `tree` on this process's devices only (arrays another process need not join).

  A replicated array gives its local copy (no communication); an array split over devices of
  several processes (FSDP) is gathered, which is a collective: call this on every process.
  """

  def local(leaf):
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return leaf
    if leaf.sharding.is_fully_replicated:
      return leaf.addressable_data(0)
    return jax.device_put(
      multihost_utils.process_allgather(leaf, tiled=True), jax.local_devices()[0]
    )

  return jax.tree.map(local, tree)


def allgather_json(obj) -> list:
  """Every process's `obj` (JSON-serialisable), as a list in process order."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([data.size], np.int64))  # [P, 1]
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[: data.size] = data
  gathered = multihost_utils.process_allgather(padded)  # [P, max length]
  return [json.loads(bytes(row[:n])) for row, n in zip(gathered, lengths[:, 0], strict=True)]


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier called `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class Preempted(Exception):
  """The run checkpointed and stopped on a SIGTERM; the same command resumes it."""


class PreemptionNotice:
  """Whether a SIGTERM asked the run to stop, at the same step on every process.

  One process: a SIGTERM handler sets a flag (the previous handler is restored on `close`).
  Several: JAX's preemption service (started by `jax.distributed.initialize`) catches the
  SIGTERM of any process and makes `reached(step)` true on all of them at one step. Call
  `reached` at every step, on every process, from the same start step.
  """

  def __init__(self):
    self._received = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._received.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
