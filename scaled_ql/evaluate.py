"""Evaluation on real ALE: many games and environments, one batched policy call per step.

    python -m scaled_ql.evaluate --workdir=RUN [--checkpoint_step=N] [--games=Breakout,Pong] \
        [--num_episodes=10] [--protocol=dqn|mgdt]

The default is the DQN-Replay protocol (`atari.Protocol()`: sticky actions 0.25, 27,000-step cap,
unclipped score) with epsilon 0.001; `--protocol=mgdt` is MGDT's (no sticky actions, JPEG round
trip). Results go to `{workdir}/eval/{tag}/results.json` and `episodes.csv` with the protocol, ALE
version, epsilon and checkpoint step recorded; the tag names the checkpoint and the settings
(`results_tag`), and evaluating more games of a checkpoint adds them to its results.

Episodes are assigned to environments up front (environment i of a game plays a fixed number of
episodes): counting the first N episodes to finish would favour short episodes, and the fixed
assignment also makes the result a function of the seed only.
"""

import csv
import dataclasses
import datetime
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ale_py
import numpy as np
from absl import logging

from scaled_ql import atari, games

PolicyFn = Callable[[np.ndarray, np.ndarray], Any]  # (obs uint8[N,84,84,4], game_id int32[N]).
RESULTS_FORMAT = "scaled_ql.eval_results/1"
EVAL_SUBDIR = "eval"
DEFAULT_EPSILON = 0.001


@dataclasses.dataclass
class GameResult:
  """Per-episode outcomes of one game, in (environment, episode) order."""

  game_id: int
  num_actions: int
  returns: list[float]  # Unclipped game scores.
  lengths: list[int]  # Agent steps (4 frames each).
  truncated: list[bool]  # True when the episode hit the step cap.


@dataclasses.dataclass
class EvalResults:
  """What `evaluate` measured and under which protocol."""

  games: dict[str, GameResult]
  protocol: dict[str, Any]
  protocol_name: str
  epsilon: float
  variant: int
  seed: int
  num_envs_per_game: int
  # Environment steps taken by all envs (also those past their quota), and the stepping loop's
  # time; in a results file that merged several evaluations (`write_results`), their totals.
  agent_steps: int
  wall_time_s: float
  ale_version: str = ale_py.__version__
  checkpoint_step: int | None = None
  created: str = ""  # When it was written (UTC, ISO 8601): orders evaluations of one checkpoint.

  def mean_returns(self) -> dict[str, float]:
    return {game: float(np.mean(r.returns)) for game, r in self.games.items()}


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
  policy_fn: PolicyFn,
  game_names: Sequence[str],
  num_episodes: int,
  *,
  game_ids: Sequence[int] | None = None,
  variant: int = 0,
  protocol: atari.Protocol | None = None,
  epsilon: float = DEFAULT_EPSILON,
  num_envs_per_game: int | None = None,
  seed: int = 0,
  log_every_s: float = 30.0,
) -> EvalResults:
  """Plays `num_episodes` episodes of every game with an epsilon-greedy `policy_fn`.

  All games' environments are stepped together; each step makes one policy call on the
  concatenated observations of every environment. Environment i of a game plays a fixed share
  of its episodes (see the module docstring); a game whose episodes are all done is no longer
  stepped.

  Args:
    policy_fn: (obs uint8[N,84,84,4], game_id int32[N]) -> greedy actions int[N], each an
      index into that game's minimal action set; N is the total number of environments.
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

  Returns:
    EvalResults with per-episode returns and lengths of every game.
  """
  protocol = protocol or atari.Protocol()
  game_names = list(game_names)
  games.validate_games(game_names)
  game_ids = list(range(len(game_names))) if game_ids is None else list(game_ids)
  if len(game_ids) != len(game_names):
    raise ValueError(f"{len(game_ids)} game_ids for {len(game_names)} games.")
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
    results = _rollout(
      policy_fn, envs, game_names, game_ids, num_episodes, num_envs, epsilon, seed, log_every_s
    )
  finally:
    for env in envs:
      env.close()
  results.protocol = dataclasses.asdict(protocol)
  results.protocol_name = protocol_name(protocol)
  results.variant = variant
  return results


def _rollout(
  policy_fn, envs, game_names, game_ids, num_episodes, num_envs, epsilon, seed, log_every_s
) -> EvalResults:
  """The stepping loop of `evaluate` (environments already built)."""
  num_games = len(envs)
  n = num_games * num_envs
  env_game = np.repeat(np.arange(num_games), num_envs)  # [N] index into game_names.
  game_id = np.repeat(np.asarray(game_ids, np.int32), num_envs)  # [N] policy head per env.
  num_actions = np.repeat([env.num_actions for env in envs], num_envs)  # [N]
  quota = np.tile(_episode_quotas(num_episodes, num_envs), num_games)  # [N] episodes to play.
  explore_rng = np.random.default_rng([seed, 7])
  next_step_reset = getattr(envs[0], "autoreset_next_step", False)

  episode_return = np.zeros(n, np.float64)
  episode_length = np.zeros(n, np.int64)
  done_count = np.zeros(n, np.int64)
  resetting = np.zeros(n, bool)  # The env's next step is an autoreset (its action is ignored).
  episodes = [[] for _ in range(n)]  # Per env: (return, length, truncated).
  obs = np.concatenate([env.reset() for env in envs])
  total = int(quota.sum())
  start = last_log = time.time()  # After the first reset: wall_time_s times the stepping loop.
  agent_steps = 0

  while (done_count < quota).any():
    # -- Act: one batched policy call, then epsilon-greedy over each game's own actions.
    actions = np.asarray(policy_fn(obs, game_id)).astype(np.int32)
    if actions.shape != (n,):
      raise ValueError(f"policy_fn returned shape {actions.shape}, expected ({n},).")
    bad = (actions < 0) | (actions >= num_actions)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(
        f"policy_fn chose action {actions[i]} for {game_names[env_game[i]]}, which has "
        f"{num_actions[i]} actions: the policy's heads do not match these games/game_ids."
      )
    explore = explore_rng.random(n) < epsilon
    random_actions = (explore_rng.random(n) * num_actions).astype(np.int32)
    actions = np.where(explore, random_actions, actions)

    # -- Step the games that still have episodes to play (a finished game keeps its last
    # observations, so the policy's batch shape, hence its compiled program, never changes).
    obs = obs.copy()  # A fresh array: the policy may keep the one it was given.
    reward = np.zeros(n, np.float64)
    terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
    stepped = np.zeros(n, bool)
    for g, env in enumerate(envs):
      rows = slice(g * num_envs, (g + 1) * num_envs)
      if (done_count[rows] >= quota[rows]).all():
        continue
      obs[rows], reward[rows], terminated[rows], truncated[rows] = env.step(actions[rows])
      stepped[rows] = True

    # -- Book-keeping: an autoreset step is not part of any episode.
    live = stepped & ~resetting
    agent_steps += int(live.sum())
    episode_return += np.where(live, reward, 0.0)
    episode_length += live
    ended = live & (terminated | truncated)
    for i in np.flatnonzero(ended):
      if done_count[i] < quota[i]:
        episodes[i].append((float(episode_return[i]), int(episode_length[i]), bool(truncated[i])))
      done_count[i] += 1
    episode_return[ended] = 0.0
    episode_length[ended] = 0
    resetting = (ended | (resetting & ~stepped)) if next_step_reset else np.zeros(n, bool)

    now = time.time()
    if now - last_log >= log_every_s:
      last_log = now
      finished = int(np.minimum(done_count, quota).sum())
      elapsed = now - start
      eta = elapsed * (total - finished) / finished if finished else float("nan")
      logging.info(
        "eval: %d/%d episodes, %d agent steps, %.0f steps/s, ETA %.0f s",
        finished,
        total,
        agent_steps,
        agent_steps / elapsed,
        eta,
      )

  logging.info("eval: %d episodes of %d games, %d agent steps in %.0f s", total, num_games,
               agent_steps, time.time() - start)  # fmt: skip
  per_game = {}
  for g, game in enumerate(game_names):
    eps = [e for i in range(g * num_envs, (g + 1) * num_envs) for e in episodes[i]]
    per_game[game] = GameResult(
      int(game_ids[g]),
      int(envs[g].num_actions),
      [e[0] for e in eps],
      [e[1] for e in eps],
      [e[2] for e in eps],
    )
  return EvalResults(
    per_game, {}, "", float(epsilon), 0, int(seed), num_envs, agent_steps, time.time() - start
  )


# ---------------------------------------------------------------------------------------------
# Results files.
# ---------------------------------------------------------------------------------------------


def _settings(results: EvalResults) -> dict[str, Any]:
  """What makes two evaluations of one checkpoint comparable game by game."""
  return {
    name: getattr(results, name)
    for name in ("protocol", "epsilon", "variant", "seed", "num_envs_per_game", "ale_version")
  }


def results_tag(results: EvalResults) -> str:
  """Directory name of one evaluation: checkpoint step, protocol, variant and seed.

  A custom protocol or an epsilon other than 0.001 adds a fingerprint of those settings, so
  that evaluations under different settings never share a directory (e.g. step caps of 50 and
  60 steps are both "custom").
  """
  step = "none" if results.checkpoint_step is None else f"{results.checkpoint_step:09d}"
  tag = f"step_{step}_{results.protocol_name}"
  tag += f"_v{results.variant}" if results.variant else ""
  tag += f"_seed{results.seed}" if results.seed else ""
  if results.protocol_name == "custom" or results.epsilon != DEFAULT_EPSILON:
    settings = json.dumps([results.protocol, results.epsilon], sort_keys=True)
    tag += "_" + hashlib.sha256(settings.encode()).hexdigest()[:8]
  return tag


def latest(results: Sequence[EvalResults]) -> EvalResults:
  """The evaluation of the latest checkpoint; of several of one checkpoint, the last written."""
  return max(
    results, key=lambda r: (-1 if r.checkpoint_step is None else r.checkpoint_step, r.created)
  )


def write_results(workdir: str, results: EvalResults, checkpoint_step: int | None = None) -> str:
  """Writes `{workdir}/eval/{tag}/results.json` and `episodes.csv`.

  An evaluation of the same checkpoint under the same settings (`results_tag`) that is already
  there is merged with this one game by game: evaluating a few games again, or more games,
  replaces those games' results and keeps the others'. One under other settings with the same
  tag (another num_envs_per_game or ALE version) is replaced, with a warning.

  Args:
    workdir: the run directory.
    results: from `evaluate`.
    checkpoint_step: the evaluated checkpoint's step (overrides `results.checkpoint_step`).

  Returns:
    The path of results.json.
  """
  if checkpoint_step is not None:
    results.checkpoint_step = int(checkpoint_step)
  out_dir = os.path.join(workdir, EVAL_SUBDIR, results_tag(results))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "results.json")
  if os.path.exists(path):
    previous = read_results(path)
    if _settings(previous) == _settings(results):
      results = dataclasses.replace(
        results,
        games={**previous.games, **results.games},
        agent_steps=previous.agent_steps + results.agent_steps,
        wall_time_s=previous.wall_time_s + results.wall_time_s,
      )
    else:
      logging.warning("Replacing %s: it was evaluated with other settings %s.", path,
                      _settings(previous))  # fmt: skip
  results.created = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
  record = dataclasses.asdict(results)
  record["format"] = RESULTS_FORMAT
  for game, r in record["games"].items():
    r["mean_return"] = float(np.mean(r["returns"]))
    r["std_return"] = float(np.std(r["returns"]))
    hns = (
      games.human_normalized_score(game, r["mean_return"]) if game in games.HUMAN_SCORES else None
    )
    r["human_normalized"] = None if hns is None else float(hns)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)
  with open(os.path.join(out_dir, "episodes.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["game", "game_id", "episode", "return", "length", "truncated"])
    for game, r in results.games.items():
      for k, (ret, length, trunc) in enumerate(zip(r.returns, r.lengths, r.truncated, strict=True)):
        writer.writerow([game, r.game_id, k, ret, length, int(trunc)])
  return path


def read_results(path: str) -> EvalResults:
  """Reads a results.json written by `write_results`."""
  with open(path) as f:
    record = json.load(f)
  if record.get("format") != RESULTS_FORMAT:
    raise ValueError(f"{path} is not a {RESULTS_FORMAT} file (format={record.get('format')}).")
  fields = {f.name for f in dataclasses.fields(GameResult)}
  per_game = {
    game: GameResult(**{k: v for k, v in r.items() if k in fields})
    for game, r in record["games"].items()
  }
  kwargs = {
    f.name: record[f.name]
    for f in dataclasses.fields(EvalResults)
    if f.name != "games" and f.name in record
  }
  return EvalResults(games=per_game, **kwargs)


def find_results(workdir: str) -> list[str]:
  """Paths of all results.json files of a run, sorted by tag (so by checkpoint step)."""
  eval_dir = os.path.join(workdir, EVAL_SUBDIR)
  if not os.path.isdir(eval_dir):
    return []
  paths = [os.path.join(eval_dir, d, "results.json") for d in sorted(os.listdir(eval_dir))]
  return [p for p in paths if os.path.exists(p)]


# ---------------------------------------------------------------------------------------------
# Periodic evaluation hook for the trainer.
# ---------------------------------------------------------------------------------------------


def make_eval_fn(
  num_episodes: int = 10,
  protocol: atari.Protocol | None = None,
  epsilon: float = DEFAULT_EPSILON,
  num_envs_per_game: int | None = None,
  seed: int = 0,
) -> Callable[[PolicyFn, Sequence[str], int, str], dict[str, float]]:
  """Builds the trainer's `eval_fn(policy_fn, game_names, step, workdir) -> scalars`.

  The hook evaluates every training game, writes the results files and returns the mean return
  per game plus the human-normalised IQM over games (`eval/hns_iqm`).
  """

  def eval_fn(policy_fn, game_names, step, workdir):
    results = evaluate(
      policy_fn,
      game_names,
      num_episodes,
      protocol=protocol,
      epsilon=epsilon,
      num_envs_per_game=num_envs_per_game,
      seed=seed,
    )
    write_results(workdir, results, checkpoint_step=step)
    scalars = {f"eval/{g}/return": v for g, v in results.mean_returns().items()}
    hns = [
      games.human_normalized_score(g, v)
      for g, v in results.mean_returns().items()
      if g in games.HUMAN_SCORES
    ]
    if hns:
      from scaled_ql import scores  # rliable is imported only when evaluating.

      scalars["eval/hns_iqm"] = float(scores.aggregate_metrics(np.asarray([hns]))[0])
    return scalars

  return eval_fn


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

  from scaled_ql import config, trainer

  f = flags.FLAGS
  workdir = config.require_workdir()
  if not os.path.isdir(workdir):
    raise config.UserError(
      f"--workdir={workdir} does not exist. Train a run first, e.g. "
      "`python -m scaled_ql.pretrain --workdir=... --gin_file=...`."
    )
  policy_fn, run_games, step = trainer.load_policy(workdir, f.checkpoint_step)
  game_names, game_ids = _parse_games(f.games, run_games)
  protocol = {"dqn": atari.Protocol(), "mgdt": atari.Protocol.mgdt()}[f.protocol]
  protocol = dataclasses.replace(protocol, max_episode_steps=f.max_episode_steps)
  logging.info("Evaluating %s at step %d on %s (%s protocol).", workdir, step, game_names,
               f.protocol)  # fmt: skip
  results = evaluate(policy_fn, game_names, f.num_episodes, game_ids=game_ids, variant=f.variant,
                     protocol=protocol, epsilon=f.epsilon, num_envs_per_game=f.num_envs_per_game,
                     seed=f.seed, log_every_s=10.0)  # fmt: skip
  path = write_results(workdir, results, checkpoint_step=step)
  for game, mean in results.mean_returns().items():
    n = len(results.games[game].returns)
    print(f"{game:>20s}  mean return {mean:10.1f}  over {n} episodes")
  print(f"Wrote {path}")


def _define_flags() -> None:
  """Evaluation flags; --workdir comes from scaled_ql.config like every entry point's."""
  from absl import flags

  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to evaluate; latest if unset.")
  flags.DEFINE_string("games", "", "Comma-separated games; all of the run's games if empty.")
  flags.DEFINE_integer("num_episodes", 10, "Episodes per game.")
  flags.DEFINE_enum("protocol", "dqn", ["dqn", "mgdt"], "dqn: sticky 0.25; mgdt: no sticky, JPEG.")
  flags.DEFINE_float("epsilon", DEFAULT_EPSILON, "Evaluation epsilon.")
  flags.DEFINE_integer("variant", 0, "Game variant (ALE mode/difficulty), see scaled_ql.atari.")
  flags.DEFINE_integer("num_envs_per_game", None, "Parallel environments per game.")
  flags.DEFINE_integer("seed", 0, "Seed of environments and exploration.")
  flags.DEFINE_integer(
    "max_episode_steps",
    27_000,
    "Agent steps before an episode is cut (27,000 = 108k frames, the DQN Replay protocol).",
  )


if __name__ == "__main__":
  from absl import app

  from scaled_ql import config

  _define_flags()
  app.run(lambda argv: config.run_main(main))
