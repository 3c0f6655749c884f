"""What the methods on the multi-game Q-network share: init, greedy policy, parameter transfer.

Scaled QL and BC train the same network (`networks.make_network`: a shared torso, spatial
embedding and projection, then one head per game stacked as [G, ...] and indexed by game_id);
they differ only in their loss. Its parameters are haiku's `{module: {name: array}}`; the heads
are the module named "heads".
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaled_ql import compute, games, networks, types
from scaled_ql.methods import base

HEADS_MODULE = "heads"


def network_config(values: dict) -> networks.NetworkConfig:
  """A NetworkConfig from its JSON form (run_info.json stores tuples as lists)."""
  return networks.NetworkConfig(
    **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  )


def build_learner(
  config: networks.NetworkConfig,
  game_names: Sequence[str],
  make_loss: Callable[[Callable, int], Callable],
  optimizer: optax.GradientTransformation,
  target_update_period: int | None,
  samples: bool = False,
  act_by_sampling: bool = False,
  compute_config: compute.ComputeConfig = compute.FLOAT32,
) -> base.Learner:
  """The learner of a method on this network, given its loss.

  Args:
    config: the network configuration.
    game_names: the games (game_id = index).
    make_loss: (network apply, num_games) -> loss_fn(params, target_params, batch, rng).
    optimizer: the optimizer.
    target_update_period: steps between target copies; None keeps no target network.
    samples: the network's action values are a policy's logits (BC): the learner and its
      policies can draw actions from softmax(logits) over the game's actions.
    act_by_sampling: with `samples`, the policy plays such a draw instead of the argmax.
    compute_config: the network's precision and rematerialisation.
  """
  games.validate_games(game_names)
  num_actions = [games.num_actions(g) for g in game_names]
  network = networks.make_network(config, num_actions, compute_config)
  example = types.zeros_batch(1)

  def q_values(params, obs, game_id):  # -> [B, A_max], illegal slots very negative
    return network.apply(params, obs, game_id).q_values

  def sample_actions(params, rng, batch, num_samples: int):  # -> int32 [B, k]
    logits = q_values(params, batch.obs, batch.game_id)
    return jax.random.categorical(rng, logits, shape=(num_samples, len(logits))).T

  return base.Learner(
    init=lambda rng: network.init(rng, example.obs, example.game_id),
    loss_fn=make_loss(network.apply, len(game_names)),
    optimizer=optimizer,
    target_update_period=target_update_period,
    example_batch=types.zeros_batch,
    make_policy=make_policy_factory(
      q_values, sample_actions if samples else None, samples and act_by_sampling
    ),
    transfer=lambda src, src_info, params: transfer(src, src_info, params, config, game_names),
    per_game=per_game,
    sample_actions=sample_actions if samples else None,
    q_values=None if samples else q_values,  # a policy's logits are not action values
  )


class GreedyPolicy(types.Policy):
  """Plays the argmax of the masked Q-values (a game's illegal slots never win), or with
  `act_by_sampling` a draw from their softmax (a BC policy's distribution)."""

  def __init__(self, act, params, sample=None, act_by_sampling: bool = False, seed: int = 0):
    self._act, self._params, self._sample = act, params, sample
    self._act_by_sampling = act_by_sampling
    self._rng, self._calls = jax.random.PRNGKey(seed), 0

  def __call__(self, obs, game_id):
    if self._act_by_sampling:
      return self.sample_actions(obs, game_id, 1)[:, 0]
    return np.asarray(self._act(self._params, obs, game_id))

  def sample_actions(self, obs, game_id, num_samples: int) -> np.ndarray:
    """int32 [N, k]: actions drawn from softmax of the values (a BC policy's distribution)."""
    if self._sample is None:
      raise ValueError("this policy's values are not a policy's logits: it does not sample")
    rng = jax.random.fold_in(self._rng, self._calls)
    self._calls += 1
    batch = types.zeros_batch(0)._replace(obs=obs, game_id=np.asarray(game_id, np.int32))
    return np.asarray(self._sample(self._params, rng, batch, num_samples))


def make_policy_factory(q_values, sample_actions=None, act_by_sampling: bool = False):
  """params -> GreedyPolicy; the argmax of the masked Q-values (and the sampling) are jitted
  once, here."""

  @jax.jit
  def act(params, obs, game_id):  # uint8 [N, 84, 84, 4], int32 [N] -> int32 [N]
    return jnp.argmax(q_values(params, obs, game_id), axis=-1).astype(jnp.int32)

  sample = sample_actions and jax.jit(sample_actions, static_argnums=3)
  return lambda params: GreedyPolicy(act, params, sample, act_by_sampling)


def is_head(module_name: str) -> bool:
  return HEADS_MODULE in module_name.split("/")


def per_game(params):
  """True for the stacked per-game heads, False for the shared layers."""
  return {module: {name: is_head(module) for name in leaves} for module, leaves in params.items()}


def transfer(source_params, source_info: dict, params, config, game_names: Sequence[str]):
  """Carries a run's parameters over to a network for `game_names`.

  The source must be the same network (every `NetworkConfig` field: equal shapes can still mean
  other things, e.g. GroupNorm's groups or the C51 support). The shared layers are copied. A
  game's head is copied from the source's head of the same game (its own |A_game| x N outputs;
  the stacked heads' unused slots keep `params`' values); games the source lacks keep their
  fresh heads in `params`.

  Args:
    source_params: the source run's parameters (heads [G_src, D, A_src * N]).
    source_info: the source run's run_info (its games, the order of its heads, and method).
    params: freshly initialised parameters for `game_names` (heads [G, D, A * N]).
    config: the network configuration of `params`.
    game_names: the games being trained.

  Returns:
    The new parameters (host numpy arrays).

  Raises:
    ValueError: naming every configuration field, shared layer or shape that differs.
  """
  source_network = source_info.get("method_config", {}).get("network")
  if source_network is None:
    raise ValueError(
      f"init_from: the source run's method ({source_info.get('method')}) has no multi-game "
      "Q-network to start from."
    )
  ours = dataclasses.asdict(config)
  theirs = dataclasses.asdict(network_config(source_network))
  changed = [f"  {k}: source {theirs[k]!r} vs configured {ours[k]!r}" for k in ours
             if theirs[k] != ours[k]]  # fmt: skip
  if changed:
    raise ValueError(
      "init_from: the source run's network is configured differently:\n"
      + "\n".join(changed)
      + "\nConfigure the same networks.NetworkConfig as the source run."
    )
  source_games = source_info["game_names"]
  source = jax.tree.map(np.asarray, jax.device_get(source_params))
  out = jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(params))
  problems = []
  for module in sorted(set(source) | set(out)):
    if is_head(module):
      continue
    for name in sorted(set(source.get(module, {})) | set(out.get(module, {}))):
      src, dst = source.get(module, {}).get(name), out.get(module, {}).get(name)
      if src is None or dst is None:
        problems.append(f"  {module}/{name}: only in the {'target' if src is None else 'source'}")
      elif src.shape != dst.shape:
        problems.append(f"  {module}/{name}: source {src.shape} vs target {dst.shape}")
      else:
        out[module][name] = src.copy()
  if problems:
    raise ValueError(
      "init_from: the source run's network does not fit the configured one "
      f"({len(problems)} differences):\n" + "\n".join(problems[:20]) + "\nConfigure the same "
      "torso, widths, spatial embedding, projection and atoms as the source run."
    )
  # Heads: [G, D, A_max * N] with each game's outputs first (`networks.MultiGameHead`); D and N
  # are the same on both sides (the configurations are equal).
  for module in (m for m in out if is_head(m)):
    for g, game in enumerate(game_names):
      if game in source_games:
        s, width = list(source_games).index(game), games.num_actions(game) * config.atoms_per_action
        out[module]["w"][g, :, :width] = source[module]["w"][s, :, :width]
        out[module]["b"][g, :width] = source[module]["b"][s, :width]
  return out
