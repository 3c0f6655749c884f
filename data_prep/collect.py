r"""Collects DQN-Replay-format data by running a behaviour policy in real ALE games.

  python -m data_prep.collect --output_dir=/data/dqn --games=Breakout,Pong --runs=1 \
      --num_checkpoints=10 --checkpoint_size=1000000 --policy=random
  python -m data_prep.collect ... --policy=schedule --policy_workdir=/runs/pretrain \
      --epsilon_start=1.0 --epsilon_end=0.01

Writes exactly the layout of gs://atari-replay-datasets/dqn (readable by dopamine's
`OutOfGraphReplayBuffer.load`, by `scaled_ql.data` and by `data_prep.convert`):
`{output_dir}/{Game}/{run}/replay_logs/$store$_{observation,action,reward,terminal}_ckpt.{k}.gz`,
`add_count_ckpt.{k}.gz`, `invalid_range_ckpt.{k}.gz`. Like a dopamine DQN agent's log, one row is
(newest frame of the stack the agent acted on, that action as a minimal-set index, the clipped
reward that followed, whether the episode ended after it); every episode starts with 3 all-zero
padding rows; the final observation of an episode is never stored; an episode cut by the time
limit (`--max_episode_steps`, 27,000 as in the data) is stored as terminal. Checkpoint k holds
rows [k*C, (k+1)*C) of the run's stream (C = --checkpoint_size; add_count = (k+1)*C, so files are
time-contiguous and episodes cross file boundaries). `--partial_last_rows=M` adds a suffix K with
M new rows and the remaining rows left over from suffix K-1, like the real data's suffix 50.

Episodes of the `--num_envs` parallel environments (played by `scaled_ql.actor`, the acting loop
of evaluation and online fine-tuning too) are appended to the stream whole, one after another, so
every episode is contiguous as in a single agent's log.

Policies (`--policy`):
  random:     uniform over the minimal action set (epsilon = 1).
  checkpoint: epsilon-greedy (`--epsilon`, default 0.01) over the greedy policy of a training run
              (`--policy_workdir`, loaded with `scaled_ql.methods.load_policy`).
  schedule:   like checkpoint, with epsilon falling linearly from `--epsilon_start` (checkpoint 0)
              to `--epsilon_end` (last checkpoint), so early files are worse than late ones, as in
              an online agent's log. It needs a policy: without one, the honest choice is random.

Resumable: checkpoints are written under temporary names and renamed, add_count last; a restarted
collection keeps complete checkpoints, deletes temporary files, and continues at the first
missing checkpoint with a new episode. The episode cut by the interruption is marked terminal in
the last row of the previous checkpoint (rewritten atomically), the same convention as a
time-limit end, so no n-step return ever runs from a cut episode into the next one.
"""

import csv
import os
from collections.abc import Callable

import numpy as np
import tqdm
from absl import app, flags, logging

from scaled_ql import actor as actor_lib
from scaled_ql import atari, games, types
from scaled_ql.data import dqn_replay, shards

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags (only when run as a program, so modules import cleanly)."""
  flags.DEFINE_string("output_dir", None, "Root of the DQN Replay layout to write.")
  flags.DEFINE_list("games", None, "Games, e.g. Breakout,Pong.")
  flags.DEFINE_string("runs", "1", "Run numbers, e.g. 1 or 1-5 (one independent stream each).")
  flags.DEFINE_integer("num_checkpoints", 1, "Full checkpoints per run (K).")
  flags.DEFINE_integer("checkpoint_size", 1_000_000, "Rows per checkpoint (C).")
  flags.DEFINE_integer("partial_last_rows", 0, "New rows in suffix K (0: none).")
  flags.DEFINE_enum("policy", "random", ["random", "checkpoint", "schedule"], "Behaviour.")
  flags.DEFINE_string("policy_workdir", None, "Training run for checkpoint/schedule.")
  flags.DEFINE_float("epsilon", 0.01, "Epsilon of --policy=checkpoint.")
  flags.DEFINE_float("epsilon_start", 1.0, "Epsilon of checkpoint 0 (schedule).")
  flags.DEFINE_float("epsilon_end", 0.01, "Epsilon of the last checkpoint (schedule).")
  flags.DEFINE_integer("num_envs", 8, "Parallel environments per game.")
  flags.DEFINE_integer("max_episode_steps", 27_000, "Time limit (agent steps).")
  flags.DEFINE_integer("seed", 0, "Seed of environments and exploration.")


PAD = dqn_replay.STACK_SIZE - 1


def epsilon_for(policy: str, suffix: int, num_suffixes: int, epsilon, start, end) -> float:
  """Exploration rate of checkpoint `suffix` (1.0 means uniform random)."""
  if policy == "random":
    return 1.0
  if policy == "checkpoint":
    return epsilon
  return start + (end - start) * suffix / max(1, num_suffixes - 1)


class _OneGamePolicy(types.Policy):
  """A multi-game policy playing one game: every env uses that game's head."""

  def __init__(self, policy: types.Policy, game_id: int):
    self._policy, self._game_id = policy, game_id

  def __call__(self, obs, game_id):
    return self._policy(obs, np.full_like(game_id, self._game_id))

  def observe(self, action, reward, ended):
    self._policy.observe(action, reward, ended)


def load_greedy_policy(workdir: str, game: str) -> types.Policy:
  """Hook for `--policy_workdir`: the greedy policy of a training run, for one game."""
  from scaled_ql import methods  # Heavy (JAX); only when a policy is asked for.

  policy, game_names, step = methods.load_policy(workdir)
  if game not in game_names:
    raise ValueError(f"{workdir} (step {step}) was not trained on {game}: it knows {game_names}")
  game_id = list(game_names).index(game)
  logging.info("behaviour policy: %s step %d, game_id %d", workdir, step, game_id)
  return _OneGamePolicy(policy, game_id)


class RunStream:
  """The row stream of one run, cut into checkpoint files of `capacity` rows."""

  def __init__(self, replay_dir: str, capacity: int, num_checkpoints: int, partial_rows: int):
    self.replay_dir, self.capacity = replay_dir, capacity
    self.num_checkpoints, self.partial_rows = num_checkpoints, partial_rows
    self.suffix = self._resume_point()
    self._start_suffix()

  def _resume_point(self) -> int:
    """Cleans temporary files; returns the first missing suffix (terminating a cut episode)."""
    if os.path.isdir(self.replay_dir):
      for name in os.listdir(self.replay_dir):
        if ".tmp-" in name:
          os.remove(os.path.join(self.replay_dir, name))
    done = dqn_replay.list_suffixes(self.replay_dir)
    suffix = 0
    while suffix in done:
      suffix += 1
    total = self.num_checkpoints + (1 if self.partial_rows else 0)
    if 0 < suffix < total:  # the stream continues after an interruption
      self._terminate_last_row(suffix - 1)
    return suffix

  def _terminate_last_row(self, suffix: int) -> None:
    path = dqn_replay.filename(self.replay_dir, dqn_replay.STORE_PREFIX + "terminal", suffix)
    terminal = dqn_replay.load_array(path)
    add_count = int(
      dqn_replay.load_array(dqn_replay.filename(self.replay_dir, "add_count", suffix))
    )
    last = (add_count - 1) % self.capacity
    if not terminal[last]:
      terminal[last] = 1
      dqn_replay.write_npy_gz_atomically(path, terminal)

  @property
  def done(self) -> bool:
    return self.suffix >= self.num_checkpoints + (1 if self.partial_rows else 0)

  @property
  def epsilon_suffix(self) -> int:
    return min(self.suffix, self.num_checkpoints - 1)

  def _start_suffix(self) -> None:
    if self.done:
      return
    self._writer = dqn_replay.SuffixStreamWriter(self.replay_dir, self.suffix, self.capacity)
    self._small = np.zeros((3, self.capacity), np.float32)  # action, reward, terminal
    self._rows = self.partial_rows if self.suffix == self.num_checkpoints else self.capacity

  def push(self, frames, actions, rewards, terminals) -> None:
    """Appends one whole episode (padding added here); fills and commits checkpoints."""
    frames = np.concatenate([np.zeros((PAD, 84, 84), np.uint8), frames])
    small = np.stack([actions, rewards, terminals]).astype(np.float32)
    small = np.concatenate([np.zeros((3, PAD), np.float32), small], axis=1)
    while len(frames) and not self.done:
      pos = self._writer.num_rows
      take = min(len(frames), self._rows - pos)
      self._writer.append(frames[:take])
      self._small[:, pos : pos + take] = small[:, :take]
      frames, small = frames[take:], small[:, take:]
      if self._writer.num_rows == self._rows:
        self._commit()

  def _commit(self) -> None:
    if self.suffix == self.num_checkpoints:  # partial: the rest of the buffer is suffix K-1's
      prev = self.suffix - 1
      old = dqn_replay.stream_rows(
        dqn_replay.filename(self.replay_dir, dqn_replay.STORE_PREFIX + "observation", prev)
      )
      skipped = 0
      for block in old:
        keep = block[max(0, self._rows - skipped) :]
        skipped += len(block)
        if len(keep):
          self._writer.append(keep)
      for i, name in enumerate(("action", "reward", "terminal")):
        path = dqn_replay.filename(self.replay_dir, dqn_replay.STORE_PREFIX + name, prev)
        self._small[i, self._rows :] = dqn_replay.load_array(path)[self._rows :]
      add_count = self.num_checkpoints * self.capacity + self._rows
    else:
      add_count = (self.suffix + 1) * self.capacity
    action, reward, terminal = self._small
    self._writer.commit(action.astype(np.int32), reward, terminal.astype(np.uint8), add_count)
    logging.info("wrote %s suffix %d", self.replay_dir, self.suffix)
    self.suffix += 1
    self._start_suffix()

  def abort(self) -> None:
    if not self.done:
      self._writer.abort()


class EpisodeLog:
  """`{run}/episodes.csv`: each logged episode's unclipped score (the files hold clipped rewards).

  Beside `replay_logs/`, so the DQN Replay layout stays exact. Rows of suffixes that a resumed
  collection writes again are dropped first.
  """

  def __init__(self, path: str, resume_suffix: int):
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        rows = [r for r in csv.DictReader(f) if int(r["suffix"]) < resume_suffix]
    self._file = open(path, "w", newline="")
    self._writer = csv.DictWriter(self._file, ["suffix", "return", "length", "truncated"])
    self._writer.writeheader()
    self._writer.writerows(rows)

  def add(self, suffix: int, score: float, length: int, truncated: bool) -> None:
    self._writer.writerow(
      dict(suffix=suffix, length=length, truncated=int(truncated), **{"return": float(score)})
    )

  def close(self) -> None:
    self._file.close()


def collect_run(
  game: str,
  replay_dir: str,
  capacity: int,
  num_checkpoints: int,
  epsilon_fn: Callable[[int], float],
  policy: types.Policy | None,
  num_envs: int = 8,
  max_episode_steps: int = 27_000,
  partial_rows: int = 0,
  seed: int = 0,
  progress: bool = True,
) -> None:
  """Collects one run (resuming if checkpoints exist).

  Args:
    game: game name.
    replay_dir: `{output_dir}/{Game}/{run}/replay_logs`.
    capacity: rows per checkpoint (C).
    num_checkpoints: full checkpoints K.
    epsilon_fn: suffix -> exploration rate.
    policy: the greedy behaviour policy (called with game_id 0; see `load_greedy_policy`), or
      None for uniform random actions.
    num_envs, max_episode_steps: environment settings (DQN Replay protocol otherwise).
    partial_rows: new rows of the partial suffix K (0: none).
    seed: seed; the resume point is folded in so that a resumed run explores anew.
  """
  stream = RunStream(replay_dir, capacity, num_checkpoints, partial_rows)
  if stream.done:
    logging.info("%s: complete, nothing to do", replay_dir)
    return
  episode_log = EpisodeLog(
    os.path.join(os.path.dirname(replay_dir), dqn_replay.EPISODES_FILE), stream.suffix
  )
  protocol = atari.Protocol(max_episode_steps=max_episode_steps)
  total = (num_checkpoints - stream.suffix) * capacity + partial_rows
  bar = tqdm.tqdm(total=total, desc=f"{game} {replay_dir}", unit="row", disable=not progress)
  rng = np.random.default_rng([seed, stream.suffix])
  env = atari.VectorEnv(game, num_envs, protocol=protocol, seed=int(rng.integers(2**31)))
  actor = actor_lib.Actor([env], policy, rng=rng)
  episodes = [[] for _ in range(num_envs)]  # per env: rows (frame, action, reward, terminal)
  try:
    actor.reset()
    while not stream.done:
      # Epsilon-greedy with the epsilon of the checkpoint being filled.
      step = actor.step(epsilon_fn(stream.epsilon_suffix))
      # A row pairs the frame the action was chosen on with that action and its outcome.
      frames = step.obs[..., -1].copy()  # [N, 84, 84]: the rows below are views of it.
      reward, ended = step.clipped_reward, step.ended
      for i in range(num_envs):
        episodes[i].append((frames[i], step.action[i], reward[i], ended[i]))
        if ended[i]:
          rows, acts, rews, terms = zip(*episodes[i], strict=True)
          if not stream.done:
            episode_log.add(
              stream.suffix, step.episode_return[i], len(rows), bool(step.truncated[i])
            )
          stream.push(np.stack(rows), np.array(acts), np.array(rews), np.array(terms))
          bar.update(min(len(rows) + PAD, total - bar.n))
          episodes[i] = []
  except BaseException:
    stream.abort()
    raise
  finally:
    env.close()
    bar.close()
    episode_log.close()


def main() -> None:
  from scaled_ql import cli

  runs = shards.parse_runs(FLAGS.runs)
  game_list = list(games.validate_games(FLAGS.games))
  if FLAGS.policy != "random" and not FLAGS.policy_workdir:
    raise cli.UserError(
      f"--policy={FLAGS.policy} needs --policy_workdir (a training run); without a policy "
      "the only honest behaviour is --policy=random"
    )
  num_suffixes = FLAGS.num_checkpoints + (1 if FLAGS.partial_last_rows else 0)
  for game in game_list:
    complete = all(  # Then collect_run has nothing to do: no need to load a policy.
      set(range(num_suffixes))
      <= set(dqn_replay.list_suffixes(dqn_replay.replay_dir(FLAGS.output_dir, game, run)))
      for run in runs
    )
    policy = None
    if FLAGS.policy != "random" and not complete:
      policy = load_greedy_policy(FLAGS.policy_workdir, game)
    for run in runs:
      collect_run(
        game,
        dqn_replay.replay_dir(FLAGS.output_dir, game, run),
        FLAGS.checkpoint_size,
        FLAGS.num_checkpoints,
        lambda k: epsilon_for(
          FLAGS.policy,
          k,
          FLAGS.num_checkpoints,
          FLAGS.epsilon,
          FLAGS.epsilon_start,
          FLAGS.epsilon_end,
        ),
        policy,
        num_envs=FLAGS.num_envs,
        max_episode_steps=FLAGS.max_episode_steps,
        partial_rows=FLAGS.partial_last_rows,
        seed=FLAGS.seed * 1000 + run,
      )


if __name__ == "__main__":
  from scaled_ql import cli  # A bad game, flag or policy run: one line (`--traceback` for more).

  define_flags()
  flags.mark_flags_as_required(["output_dir", "games"])
  app.run(lambda argv: cli.run_main(main))
