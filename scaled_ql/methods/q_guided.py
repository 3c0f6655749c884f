"""Q-guided action selection (from PA-RL): a policy's samples re-ranked by a learned critic.

    k actions ~ proposal policy (BC or the DT) at the state
    play argmax over those k of Q(s, a) under a Scaled QL run's critic

The proposal is a method (its network, loss and sampling); its parameters come from
`train.init_from` (the BC or DT run being improved). With `train.num_grad_steps = 0` the run
checkpoints those parameters and evaluates the re-ranked policy; with more steps it also
distils the re-ranked actions back into the proposal with its own supervised loss (the data's
action replaced by the best of k sampled actions under the critic). The critic is fixed.

    gin/methods/q_guided_{bc,dt}.gin (fragments), gin/baselines/q_guided.gin (paper scale)
"""

import dataclasses
import posixpath
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from scaled_ql import checkpointing, compute, initialization, multihost, types
from scaled_ql.methods import base, loading


@dataclasses.dataclass(frozen=True)
class QGuided:
  """Q-guided selection's configuration (gin: `methods.QGuided`).

  Attributes:
    proposal: the method whose policy proposes actions (`@methods.BC()`, `@methods.
      DecisionTransformer()`); it must sample actions.
    critic_from: the critic, a Scaled QL run directory (its latest checkpoint) or
      `RUN/checkpoints/STEP`; it must hold every game of this run. A run directory is pinned
      to its latest checkpoint when the run starts: run_info.json records that step, so a
      later re-evaluation uses the same critic if the critic's run trains on.
    num_samples: k, actions drawn from the proposal per state.
    name: the label of its runs in reports.
  """

  proposal: base.Method
  critic_from: str
  num_samples: int = 8
  name: str = "q_guided"

  def __post_init__(self):
    if self.num_samples < 1:
      raise ValueError(f"QGuided.num_samples (k) must be >= 1, got {self.num_samples}.")

  def config(self) -> dict:
    record = loading.method_record(self.proposal)
    return {
      "proposal_class": record["method_class"],
      "proposal_config": record["method_config"],
      "critic_from": self._critic_checkpoint(),
      "num_samples": self.num_samples,
      "name": self.name,
    }

  @classmethod
  def from_config(cls, config: dict) -> "QGuided":
    proposal = loading.load_method(
      {"method_class": config["proposal_class"], "method_config": config["proposal_config"]}
    )
    return cls(proposal, config["critic_from"], config["num_samples"], config["name"])

  def _critic_checkpoint(self) -> str:
    """`critic_from` as `RUN/checkpoints/STEP` (the latest step when it names a run; as it
    is when the run has no checkpoint, which `build` then reports)."""
    run, step = initialization.InitFrom(self.critic_from).run_and_step()
    step = checkpointing.latest_step(run) if step is None else step
    return self.critic_from if step is None else posixpath.join(
      run, checkpointing.CHECKPOINT_SUBDIR, str(step)
    )

  def build(
    self, game_names: Sequence[str], compute_config: compute.ComputeConfig = compute.FLOAT32
  ) -> base.Learner:
    proposal = self.proposal.build(game_names, compute_config)
    if proposal.sample_actions is None:
      raise ValueError(
        f"QGuided.proposal: {self.proposal.name} does not sample actions; propose with "
        "@methods.BC() or @methods.DecisionTransformer()."
      )
    critic_params, critic, critic_games = _load_critic(
      self._critic_checkpoint(), game_names, compute_config
    )
    k = self.num_samples

    def best_of_k(params, rng, batch):
      """int32 [B]: the proposal's k sampled actions' argmax under the critic."""
      candidates = proposal.sample_actions(params, rng, batch, k)  # [B, k]
      q = critic.q_values(critic_params, batch.obs, jnp.asarray(critic_games)[batch.game_id])
      best = jnp.argmax(jnp.take_along_axis(q, candidates, axis=1), axis=1)  # [B]
      return jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0]

    def loss_fn(params, target_params, batch, rng):
      sample_rng, loss_rng = jax.random.split(rng)
      chosen = jax.lax.stop_gradient(best_of_k(params, sample_rng, batch))
      loss, metrics = proposal.loss_fn(params, target_params, _with_action(batch, chosen), loss_rng)
      agreement = jnp.mean(chosen == _last_action(batch))  # re-ranked vs the data's action
      return loss, {**metrics, "data_action_agreement": agreement}

    q_act = jax.jit(critic.q_values)
    acting_params = multihost.host_local(critic_params)  # Each process acts on its own devices.
    return proposal._replace(
      loss_fn=loss_fn,
      make_policy=lambda params: QGuidedPolicy(
        proposal.make_policy(params),
        lambda obs, game_id: q_act(acting_params, obs, game_id),
        critic_games,
        k,
      ),  # fmt: skip
      sample_actions=None,
      q_values=None,
    )


def _load_critic(critic_from: str, game_names: Sequence[str], compute_config):
  """(params, learner, game_id -> the critic's game_id int32 [G]); one clear error if unfit."""
  run, step = initialization.InitFrom(critic_from).run_and_step()
  try:
    params, learner, info, _ = loading.restore_params(run, step, compute_config=compute_config)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"QGuided.critic_from={critic_from!r}: cannot load a run there ({e}).") from e
  if learner.q_values is None:
    raise ValueError(
      f"QGuided.critic_from={critic_from!r} is a {info.get('method')} run, not a critic: give "
      "a Scaled QL run."
    )
  missing = [g for g in game_names if g not in info["game_names"]]
  if missing:
    raise ValueError(
      f"QGuided.critic_from={critic_from!r} has no head for {missing} (it holds "
      f"{info['game_names']})."
    )
  return params, learner, np.array([info["game_names"].index(g) for g in game_names], np.int32)


def _last_action(batch):
  return batch.action[:, -1] if isinstance(batch, types.WindowBatch) else batch.action


def _with_action(batch, action):
  """The batch with each example's (last step's) action replaced."""
  if isinstance(batch, types.WindowBatch):
    return batch._replace(action=batch.action.at[:, -1].set(action))
  return batch._replace(action=action)


class QGuidedPolicy(types.Policy):
  """Plays the best of k actions of a proposal policy under a critic's Q-values."""

  def __init__(self, proposal: types.Policy, q_values, critic_games: np.ndarray, k: int):
    """Args: proposal, a policy with `sample_actions`; q_values, (obs, critic game_id) ->
    [N, A]; critic_games, this run's game_id -> the critic's; k, samples per state."""
    self._proposal, self._q, self._critic_games, self._k = proposal, q_values, critic_games, k

  def __call__(self, obs, game_id):
    candidates = self._proposal.sample_actions(obs, game_id, self._k)  # [N, k]
    q = np.asarray(self._q(obs, self._critic_games[game_id]))  # [N, A]
    best = np.argmax(np.take_along_axis(q, candidates, axis=1), axis=1)
    return np.take_along_axis(candidates, best[:, None], axis=1)[:, 0].astype(np.int32)

  def observe(self, action, reward, ended):
    self._proposal.observe(action, reward, ended)
