"""Online training through the one trainer: a real Breakout variant, checkpointed and resumed."""

import functools

import numpy as np
import pytest

from scaled_ql import checkpointing, networks, online, runs, trainer
from scaled_ql.methods.scaled_ql import ScaledQL

SMALL = networks.NetworkConfig(torso="small", widths=(8, 8, 8, 8), projection_dim=16)
SETTINGS = dict(variant=1, num_envs=2, buffer_capacity=400, env_steps_per_grad_step=2,
                warmup_env_steps=100, epsilon_decay_env_steps=200, n_step=3,
                max_episode_steps=40)  # fmt: skip


def test_an_online_run_on_a_breakout_variant_checkpoints_and_resumes(tmp_path):
  workdir, sources = str(tmp_path / "run"), []

  def dataset_fn(**kwargs):
    sources.append(online.OnlineSource(**kwargs, **SETTINGS))
    return sources[-1]

  train = functools.partial(
    trainer.train, workdir, game_names=["Breakout"], dataset_fn=dataset_fn,
    method=ScaledQL(network=SMALL, target_update_period=10), global_batch_size=4,
    log_every_steps=10, checkpoint_every_steps=30, phase="online_finetune",
  )  # fmt: skip
  train(num_grad_steps=30)
  first = sources[0]
  assert first.env_steps == 100 + 30 * 2  # Warm-up, then 2 env steps per gradient step.
  saved = checkpointing.Checkpointer(workdir).restore_data(30)
  assert int(saved["env_steps"]) == 160

  train(num_grad_steps=60)
  resumed = sources[1]
  assert resumed.env_steps == 160 + 30 * 2  # No second warm-up: the buffer came back.
  rows = [r for r in runs.read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
  env_steps = [r["online/env_steps"] for r in rows]
  assert env_steps == [120, 140, 160, 180, 200, 220]
  # Linear decay from the end of the 100 warm-up steps.
  assert [r["online/epsilon"] for r in rows] == pytest.approx([1 - 0.99 * (e - 100) / 200
                                                               for e in env_steps])  # fmt: skip
  # 40-step episodes: several ended, and their returns were logged.
  assert sum(r.get("online/episodes", 0) for r in rows) >= 4
  assert all(np.isfinite(r["online/episode_return"]) for r in rows if "online/episodes" in r)
  assert runs.read_run_info(workdir)["phase"] == "online_finetune"


def test_epsilon_holds_through_the_warm_up_then_decays_as_dopamines():
  source = online.OnlineSource(game_names=["Breakout"], local_batch_size=4, seed=0, **SETTINGS)

  def dopamine(step, warmup=100, decay=200, end=0.01):  # its linearly_decaying_epsilon
    bonus = (decay + warmup - step) * (1.0 - end) / decay
    return end + np.clip(bonus, 0.0, 1.0 - end)

  for env_steps in (0, 50, 100, 150, 200, 300, 301, 1000):
    source.env_steps = env_steps
    assert source.epsilon() == pytest.approx(dopamine(env_steps)), env_steps


def test_bad_settings_are_named_before_any_work():
  common = dict(local_batch_size=4, seed=0)
  with pytest.raises(ValueError, match="variant"):
    online.OnlineSource(game_names=["Breakout"], variant=99, **common)
  with pytest.raises(ValueError, match="plays one game"):
    online.OnlineSource(game_names=["Breakout", "Pong"], **common)
  with pytest.raises(ValueError, match="multiple of num_envs=4"):
    online.OnlineSource(game_names=["Breakout"], env_steps_per_grad_step=3, **common)
