"""The DQN Replay data layer (TensorFlow is imported only by tfds_reader, and only when used).

Modules:
  dqn_replay: the DQN Replay file format: names, streaming validated reads, atomic writes.
  shards: the random-access format written by `python -m data_prep.convert`, and its reader.
  transitions: dopamine's transition semantics (valid states, n-step returns), vectorised.
  pool: the sampler's fixed-size in-memory pool of row chunks, refilled in the background.
  sampler: `ReplayDataset`, the deterministic, resumable multi-game sampler.
  tfds_reader: reads a local TFDS `rlu_atari_checkpoints_ordered` copy (for convert).
  source: `DataSource`, the contract between a data source and the trainer.
  replay_buffer: `ReplayBuffer`, an in-process buffer filled by acting (online training).

Public API:
  ReplayDataset: `batch(step) -> Batch` (a pure function of seed, step and process) and
    `iterate(start_step, prefetch=2)`.
  DataError: raised, naming the file or directory, for missing, corrupt or inconsistent input.
"""

from scaled_ql.data.dqn_replay import DataError
from scaled_ql.data.sampler import ReplayDataset

__all__ = ["DataError", "ReplayDataset"]
