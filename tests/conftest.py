"""Test-wide set-up: four fake CPU devices so that sharded code paths run in tests; real ALE
data shared by the test session (`shard_dir`)."""

import os

import gin
import pytest

# Must be set before jax is imported anywhere in the test process.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:  # Keep the user's other XLA flags.
  os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=4".strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
  """2 x 400 rows of random play of Breakout and Pong in real ALE games, collected and converted
  once per session as a user would (the raw logs are in the sibling directory `replay`)."""
  from tests.data import replay_fixtures  # Imports jax: after the environment above.

  return replay_fixtures.collected_shards(str(tmp_path_factory.mktemp("data")), "Breakout,Pong")


@pytest.fixture(autouse=True)
def _clear_gin():
  """Each test starts from gin's empty configuration: a test that parses gin files (or runs a
  command in process) would otherwise configure the next ones (a 0-step run then evaluating
  every game, as `gin_configs_test`'s critic once did after the fine-tuning tests)."""
  yield
  gin.clear_config()
