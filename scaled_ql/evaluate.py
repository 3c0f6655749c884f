"""Evaluation on real ALE: many games and environments, one batched policy call per step.

    python -m scaled_ql.evaluate --workdir=RUN [--checkpoint_step=N] [--games=Breakout,Pong] \
        [--num_episodes=10] [--protocol=dqn|mgdt]

The default is the DQN-Replay protocol (`atari.Protocol()`: sticky actions 0.25, 27,000-step cap,
unclipped score) with epsilon 0.001; `--protocol=mgdt` is MGDT's (no sticky actions, JPEG round
trip). Results go to `{workdir}/eval/{tag}/results.json` and `episodes.csv` (`scaled_ql.runs`)
with the protocol, ALE version, epsilon and checkpoint step recorded; the tag names the
checkpoint and the settings (`runs.results_tag`), and evaluating more games of a checkpoint adds
them to its results.

Episodes are assigned to environments up front (environment i of a game plays a fixed number of
episodes): counting the first N episodes to finish would favour short episodes, and the fixed
assignment also makes the result a function of the seed only (and, for the periodic evaluation
of a multi-host run, which splits the games over the processes, of their number: each process
seeds its own environments). The acting loop is `scaled_ql.actor`'s.
"""

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import ale_py
import jax
import numpy as np
from absl import logging
from etils import epath

from scaled_ql import actor as actor_lib
from scaled_ql import atari, games, multihost, runs, types, video


def protocol_name(protocol: atari.Protocol) -> str:
  """'dqn' or 'mgdt' for the two published protocols, 'custom' otherwise."""
  if protocol == atari.Protocol():
    return "dqn"
  if protocol == atari.Protocol.mgdt():
    return "mgdt"
  return "custom"


def _episode_quotas(num_episodes: int, num_envs: int) -> np.ndarray:
  """Splits num_episodes over num_envs environments as evenly as possible: int [num_envs]."""
  return np.full(num_envs, num_episodes // num_envs) + (
    np.arange(num_envs) < num_episodes % num_envs
  )


def evaluate(
  policy: types.Policy,
  game_names: Sequence[str],
  num_episodes: int,
  *,
  game_ids: Sequence[int] | None = None,
  variant: int = 0,
  protocol: atari.Protocol | None = None,
  epsilon: float = runs.DEFAULT_EVAL_EPSILON,
  num_envs_per_game: int | None = None,
  seed: int = 0,
  log_every_s: float = 30.0,
  video_dir: str | None = None,
) -> runs.EvalResults:
  """Plays `num_episodes` episodes of every game with an epsilon-greedy `policy`.

  All games' environments are stepped together by one `actor.Actor`: each step makes one policy
  call on the concatenated observations of every environment. Environment i of a game plays a
  fixed share of its episodes (see the module docstring); a game whose episodes are all done is
  no longer stepped.

  Args:
    policy: a `types.Policy`: (obs uint8[N,84,84,4], game_id int32[N]) -> greedy actions
      int[N], each an index into that game's minimal action set; N is the total number of
      environments. It is told of every step (`observe`), so it may keep state per environment.
    game_names: games to play (names as in `scaled_ql.games`).
    num_episodes: episodes per game.
    game_ids: the policy's head index of each game; default 0..len(game_names)-1.
    variant: the ALE mode/difficulty variant (see `atari.make_env`).
    protocol: environment protocol; default `atari.Protocol()` (DQN Replay's).
    epsilon: probability of a uniformly random action (over the game's own action set).
    num_envs_per_game: parallel environments per game; default min(num_episodes, 8).
    seed: seeds environments and exploration: the same seed (and num_envs_per_game) gives
      the same results.
    log_every_s: seconds between progress lines.
    video_dir: if set, writes the first episode of each game (its first environment), as the
      agent sees it, to `{video_dir}/{game}_v{variant}.mp4` (`scaled_ql.video`).

  Returns:
    `runs.EvalResults` with per-episode returns and lengths of every game.
  """
  protocol = protocol or atari.Protocol()
  game_names = list(game_names)
  games.validate_games(game_names)
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
  num_envs = num_envs_per_game or min(num_episodes, 8)

  # -- One vector environment per game; environments of all games form one batch of N.
  envs = []
  try:
    for g, game in enumerate(game_names):
      env_seed = int(np.random.SeedSequence([seed, g]).generate_state(1)[0] % 2**30)
      envs.append(
        atari.VectorEnv(game, num_envs, variant=variant, protocol=protocol, seed=env_seed)
      )
    actor = actor_lib.Actor(envs, policy, game_ids, rng=[seed, 7])
    recorder = None
    if video_dir:
      names = {g * num_envs: f"{game}_v{variant}" for g, game in enumerate(game_names)}
      recorder = video.EpisodeRecorder(video_dir, names)
    per_game, agent_steps, wall_time_s = _play(
      actor, num_episodes, epsilon, log_every_s, protocol.max_episode_steps, recorder
    )
  finally:
    for env in envs:
      env.close()
  return runs.EvalResults(
    games=per_game,
    protocol=dataclasses.asdict(protocol),
    protocol_name=protocol_name(protocol),
    epsilon=float(epsilon),
    variant=variant,
    seed=int(seed),
    num_envs_per_game=num_envs,
    agent_steps=agent_steps,
    wall_time_s=wall_time_s,
    ale_version=ale_py.__version__,
  )


def _max_calls_left(
  done_count: np.ndarray, quota: np.ndarray, episode_length: np.ndarray, max_episode_steps: int
) -> int:
  """Actor steps left at most: every env's unfinished episodes run to the step cap.

  Args:
    done_count: int [N], episodes each env has ended.
    quota: int [N], episodes each env is to play.
    episode_length: int [N], agent steps of each env's current episode.
    max_episode_steps: the protocol's cap on an episode's agent steps.
  """
  left = np.maximum(quota - done_count, 0)  # [N] episodes still to end, the current one included.
  steps = np.where(left > 0, left * max_episode_steps - episode_length, 0)
  return int(steps.max(initial=0))


def _play(
  actor: actor_lib.Actor,
  num_episodes: int,
  epsilon: float,
  log_every_s: float,
  max_episode_steps: int,
  recorder: video.EpisodeRecorder | None = None,
) -> tuple[dict[str, runs.GameResult], int, float]:
  """Steps `actor` until each of its envs has played its quota of episodes (recording videos).

  Returns:
    (per-game results, agent steps taken, seconds of the stepping loop after the first reset).
  """
  num_games, num_envs = len(actor.envs), actor.envs[0].num_envs
  quota = np.tile(_episode_quotas(num_episodes, num_envs), num_games)  # [N] episodes to play.
  done_count = np.zeros(actor.num_envs, np.int64)
  episodes = [[] for _ in range(actor.num_envs)]  # Per env: (return, length, truncated).
  total = int(quota.sum())
  actor.reset()
  start = last_log = time.time()  # After the first reset: wall_time_s times the stepping loop.
  agent_steps = calls = 0

  while (done_count < quota).any():
    # A game whose envs have all played their quota is no longer stepped.
    active = (done_count < quota).reshape(num_games, num_envs).any(axis=1)
    step = actor.step(epsilon, active)
    calls += 1
    if recorder:
      recorder.add(step)
    agent_steps += int(step.stepped.sum())
    for i in np.flatnonzero(step.ended):
      if done_count[i] < quota[i]:
        episodes[i].append(
          (float(step.episode_return[i]), int(step.episode_length[i]), bool(step.truncated[i]))
        )
      done_count[i] += 1

    now = time.time()
    if now - last_log >= log_every_s:
      last_log = now
      finished = int(np.minimum(done_count, quota).sum())
      elapsed = now - start
      length = np.where(step.ended, 0, step.episode_length)  # [N] an ended env starts anew.
      bound = _max_calls_left(done_count, quota, length, max_episode_steps) * elapsed / calls
      # Episodes still running are the long ones: the estimate from finished ones is capped.
      eta = min(elapsed * (total - finished) / finished, bound) if finished else bound
      logging.info(
        "eval: %d/%d episodes, %d agent steps, %.0f steps/s, ETA %.0f s (at most %.0f s if "
        "every episode runs to the %d-step cap)",
        finished,
        total,
        agent_steps,
        agent_steps / elapsed,
        eta,
        bound,
        max_episode_steps,
      )

  wall_time_s = time.time() - start
  if recorder:
    recorder.close()
    logging.info("eval: videos %s", recorder.written)
  logging.info("eval: %d episodes of %d games, %d agent steps in %.0f s", total, num_games,
               agent_steps, wall_time_s)  # fmt: skip
  per_game = {}
  for g, env in enumerate(actor.envs):
    eps = [e for i in range(g * num_envs, (g + 1) * num_envs) for e in episodes[i]]
    per_game[env.game] = runs.GameResult(
      game_id=int(actor.game_id[g * num_envs]),
      num_actions=int(env.num_actions),
      returns=[e[0] for e in eps],
      lengths=[e[1] for e in eps],
      truncated=[e[2] for e in eps],
    )
  return per_game, agent_steps, wall_time_s


# ---------------------------------------------------------------------------------------------
# Periodic evaluation hook for the trainer.
# ---------------------------------------------------------------------------------------------


def make_eval_fn(
  num_episodes: int = 10,
  protocol: atari.Protocol | None = None,
  epsilon: float = runs.DEFAULT_EVAL_EPSILON,
  num_envs_per_game: int | None = None,
  seed: int = 0,
  videos: bool = False,
  variant: int = 0,
) -> Callable[[types.Policy, Sequence[str], int, str], dict[str, float]]:
  """Builds the trainer's `eval_fn(policy, game_names, step, workdir) -> scalars`.

  The hook evaluates every training game, writes the results files and returns the mean return
  per game plus the human-normalised IQM over games (`eval/hns_iqm`), on the games' `variant`
  (ALE mode/difficulty; 0 is the game as in the data). With `videos`, each
  evaluation also writes each game's first episode to `{workdir}/videos/step_{step}/`.
  """

  def eval_fn(policy, game_names, step, workdir):
    # On a multi-host run each process plays every process_count-th game with its own copy of
    # the policy; process 0 writes the results of all.
    game_names = list(game_names)
    mine = game_names[jax.process_index() :: jax.process_count()]
    results = (
      None
      if not mine
      else evaluate(
        policy,
        mine,
        num_episodes,
        game_ids=[game_names.index(game) for game in mine],
        protocol=protocol,
        epsilon=epsilon,
        num_envs_per_game=num_envs_per_game,
        seed=seed,
        variant=variant,
        video_dir=os.path.join(workdir, "videos", f"step_{step:09d}") if videos else None,
      )
    )
    results = _merge_over_processes(results, game_names)
    if jax.process_index() == 0:
      runs.write_results(workdir, results, checkpoint_step=step)
    scalars = {f"eval/{g}/return": v for g, v in results.mean_returns().items()}
    hns = [
      games.human_normalized_score(g, v)
      for g, v in results.mean_returns().items()
      if g in games.HUMAN_SCORES
    ]
    if hns:
      from scaled_ql.report import scores  # rliable is imported only when evaluating.

      scalars["eval/hns_iqm"] = float(scores.aggregate_metrics(np.asarray([hns]))[0])
    return scalars

  return eval_fn


def _merge_over_processes(results: runs.EvalResults | None, game_names) -> runs.EvalResults:
  """Every process's games (`None`: it had none) in one `EvalResults`, games in `game_names`
  order, on every process (a collective: every process calls it)."""
  if jax.process_count() == 1:
    return results
  parts = [p for p in multihost.allgather_json(results and dataclasses.asdict(results)) if p]
  per_game = {game: r for part in parts for game, r in part["games"].items()}
  return runs.EvalResults(
    **{
      **parts[0],
      "games": {game: runs.GameResult(**per_game[game]) for game in game_names},
      "agent_steps": sum(part["agent_steps"] for part in parts),
      "wall_time_s": max(part["wall_time_s"] for part in parts),  # The processes play at once.
    }
  )


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def _parse_games(flag_value: str, run_games: Sequence[str]) -> tuple[list[str], list[int]]:
  """Chosen games and their head indices in the run; a game without a head is an error."""
  chosen = (
    [g.strip() for g in flag_value.split(",") if g.strip()] if flag_value else list(run_games)
  )
  missing = [g for g in chosen if g not in run_games]
  if missing:
    raise ValueError(
      f"The run has no policy head for {missing}; it was trained on {list(run_games)}."
    )
  return chosen, [list(run_games).index(g) for g in chosen]


def main() -> None:
  """The CLI: evaluates a run's checkpoint and writes its results files."""
  from absl import flags

  from scaled_ql import cli, methods  # JAX and the run's method: only when run.

  f = flags.FLAGS
  workdir = cli.require_workdir()
  if not epath.Path(workdir).is_dir():  # A local path or a gs:// URI.
    raise cli.UserError(
      f"--workdir={workdir} does not exist. Train a run first, e.g. "
      "`python -m scaled_ql.pretrain --workdir=... --gin_file=...`."
    )
  policy, run_games, step = methods.load_policy(workdir, f.checkpoint_step)
  game_names, game_ids = _parse_games(f.games, run_games)
  protocol = {"dqn": atari.Protocol(), "mgdt": atari.Protocol.mgdt()}[f.protocol]
  protocol = dataclasses.replace(protocol, max_episode_steps=f.max_episode_steps)
  logging.info("Evaluating %s at step %d on %s (%s protocol).", workdir, step, game_names,
               f.protocol)  # fmt: skip
  results = evaluate(policy, game_names, f.num_episodes, game_ids=game_ids, variant=f.variant,
                     protocol=protocol, epsilon=f.epsilon, num_envs_per_game=f.num_envs_per_game,
                     seed=f.seed, log_every_s=10.0, video_dir=f.video_dir)  # fmt: skip
  path = runs.write_results(workdir, results, checkpoint_step=step)
  for game, mean in results.mean_returns().items():
    n = len(results.games[game].returns)
    print(f"{game:>20s}  mean return {mean:10.1f}  over {n} episodes")
  print(f"Wrote {path}")


def _define_flags() -> None:
  """Evaluation flags; --workdir comes from scaled_ql.cli like every entry point's."""
  from absl import flags

  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to evaluate; latest if unset.")
  flags.DEFINE_string("games", "", "Comma-separated games; all of the run's games if empty.")
  flags.DEFINE_integer("num_episodes", 10, "Episodes per game.")
  flags.DEFINE_enum("protocol", "dqn", ["dqn", "mgdt"], "dqn: sticky 0.25; mgdt: no sticky, JPEG.")
  flags.DEFINE_float("epsilon", runs.DEFAULT_EVAL_EPSILON, "Evaluation epsilon.")
  flags.DEFINE_integer("variant", 0, "Game variant (ALE mode/difficulty), see scaled_ql.atari.")
  flags.DEFINE_integer("num_envs_per_game", None, "Parallel environments per game.")
  flags.DEFINE_integer("seed", 0, "Seed of environments and exploration.")
  flags.DEFINE_string("video_dir", None, "Write each game's first episode here as MP4.")
  flags.DEFINE_integer(
    "max_episode_steps",
    27_000,
    "Agent steps before an episode is cut (27,000 = 108k frames, the DQN Replay protocol).",
  )


if __name__ == "__main__":
  from absl import app

  from scaled_ql import cli

  _define_flags()
  app.run(lambda argv: cli.run_main(main))
