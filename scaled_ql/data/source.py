"""The data-source contract between the data layer and the trainer.

The trainer builds its source with `dataset_fn(game_names=..., local_batch_size=..., seed=...,
process_index=..., process_count=...)` and then only calls the methods below. An offline
source (`ReplayDataset`) makes each batch a pure function of (seed, step), so its position is
the step and it has no state of its own; a source fed by acting (`replay_buffer.ReplayBuffer`)
returns its contents and position in `state()`, which the trainer saves in every checkpoint
and gives back through `restore` on resume. The data layer never imports the learner: a source
that acts gets `current_policy` from the trainer's `iterate` call: a callable that makes a
`types.Policy` on the current parameters.
"""

from collections.abc import Callable, Iterator

import numpy as np

from scaled_ql.types import Batch, Policy


class DataSource:
  """Base class of the trainer's data sources; offline sources override only what they have."""

  # "near_optimal" / "low_quality" when the selection is one of the paper's (for reports).
  data_quality: str | None = None

  def iterate(
    self, start_step: int, current_policy: Callable[[], Policy] | None = None
  ) -> Iterator[Batch]:
    """Yields the host-local batches of steps start_step, start_step + 1, ...

    Args:
      start_step: the first step (the restored step when resuming).
      current_policy: () -> a `types.Policy` on the learner's current parameters, for a source
        that acts between batches. Call it anew for each batch, in the thread that iterates:
        the policy is valid only until the next gradient step (which donates the parameters).
    """
    raise NotImplementedError

  def describe(self) -> str:
    """One line for the log: what is sampled and how."""
    return type(self).__name__

  def metrics(self) -> dict[str, float]:
    """Scalars the trainer logs with each logged step (e.g. an acting source's episode
    returns since the last call); {} for offline data."""
    return {}

  def state(self) -> dict[str, np.ndarray]:
    """What a checkpoint must hold to continue this source exactly ({}: the step suffices)."""
    return {}

  def restore(self, state: dict[str, np.ndarray]) -> None:
    """Continues from a `state()` saved in a checkpoint."""
    if state:
      raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}.")

  def close(self) -> None:
    """Releases threads and memory."""


class Concatenated(DataSource):
  """Several sources as one: each batch is their batches of the same step, end to end.

  The trainer splits the global batch into `data_shards` sources, each a disjoint share of the
  data, and gives every process its consecutive shards. As the global batch is the shards'
  batches in order whatever the number of processes, one process holding shards 0 and 1
  makes the same global batches as two processes holding one each.
  """

  def __init__(self, sources: list[DataSource]):
    self.sources = sources
    self.data_quality = sources[0].data_quality

  def iterate(self, start_step, current_policy=None):
    streams = [source.iterate(start_step, current_policy) for source in self.sources]
    try:
      for batches in zip(*streams, strict=True):
        # Batch / WindowBatch are NamedTuples of arrays [B, ...]: join field by field.
        yield type(batches[0])(*(np.concatenate(parts) for parts in zip(*batches, strict=True)))
    finally:
      for stream in streams:
        stream.close()

  def metrics(self) -> dict[str, float]:
    return {k: v for source in self.sources for k, v in source.metrics().items()}

  def state(self) -> dict[str, np.ndarray]:
    if any(source.state() for source in self.sources):
      raise ValueError(
        f"{type(self.sources[0]).__name__} keeps state (rows gathered by acting), which is "
        "checkpointed for one data shard only; run it with train.data_shards = 1."
      )
    return {}

  def describe(self) -> str:
    return f"{len(self.sources)} data shards on this process: " + "; ".join(
      source.describe() for source in self.sources
    )

  def close(self) -> None:
    for source in self.sources:
      source.close()
