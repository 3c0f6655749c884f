"""Atari environments with the DQN Replay (dopamine) protocol, single and batched.

The protocol (DESIGN.md section 3), identical to what produced the DQN Replay data:

* frame skip 4; the observation is the pixel-wise max of the last two frames of the skip;
* ALE grayscale, `cv2.resize(..., INTER_AREA)` to 84x84 uint8;
* a stack of the last 4 such frames, newest last: obs uint8 [84, 84, 4]; at the start of an
  episode the older slots are zeros (as in dopamine's agent and the zero rows of the replay logs);
* sticky actions with probability 0.25, applied by ALE on every emulator frame;
* no no-op starts, no fire-on-reset, no terminal on life loss, the game's minimal action set
  (actions are indices into `games.MINIMAL_ACTIONS[game]`);
* episodes truncated after 27,000 agent steps (108k frames);
* the returned reward is the unclipped game reward (the score); the clipped training reward is
  beside it (`info["clipped_reward"]`).

Deviations are options of `Protocol`, never silent defaults. `Protocol.mgdt()` is the
Multi-Game Decision Transformer's evaluation protocol.

Two implementations share the protocol. `make_env` builds one gymnasium env from ale-py's
`AtariEnv` and gymnasium's `AtariPreprocessing`. `VectorEnv` runs many episodes at once, on
ale-py's threaded C++ `AtariVectorEnv` when the protocol allows it (variant 0, no JPEG), else
by stepping `make_env` envs in turn. tests/atari_test.py checks both against gymnasium's
`AtariPreprocessing` and against each other on every game: frames and rewards are bit-identical.

Game variants are ALE (mode, difficulty) pairs; see `VARIANTS` and `variants`.
`python -m scaled_ql.atari --game=Breakout --variant=1` lists a game's variants and plays one.
"""

import dataclasses
import functools

import cv2
import gymnasium
import numpy as np

from scaled_ql import games

OBS_SIZE = 84


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How an Atari game is presented to the agent. The defaults are DQN Replay's.

  Attributes:
    sticky_action_prob: probability that ALE repeats the previous action on each frame.
    full_action_set: if True, actions index ALE's 18 actions instead of the minimal set.
    jpeg_quality: if set, each 84x84 frame goes through a JPEG encode/decode at this quality
      before stacking (MGDT's evaluation did this to match its training data).
    max_episode_steps: agent steps after which an episode is truncated.
    frame_skip: emulator frames per agent step (the action is repeated).
    stack_size: number of frames in an observation.
  """

  sticky_action_prob: float = 0.25
  full_action_set: bool = False
  jpeg_quality: int | None = None
  max_episode_steps: int = 27_000
  frame_skip: int = 4
  stack_size: int = 4

  def __post_init__(self):
    if not 0.0 <= self.sticky_action_prob <= 1.0:
      raise ValueError(f"sticky_action_prob must be in [0, 1], got {self.sticky_action_prob}.")
    if not isinstance(self.full_action_set, bool):
      raise ValueError(f"full_action_set must be a bool, got {self.full_action_set!r}.")
    if self.jpeg_quality is not None and not (
      isinstance(self.jpeg_quality, int) and 1 <= self.jpeg_quality <= 100
    ):
      raise ValueError(f"jpeg_quality must be None or an int in 1..100, got {self.jpeg_quality!r}.")
    for name in ("max_episode_steps", "frame_skip", "stack_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")

  @classmethod
  def mgdt(cls) -> "Protocol":
    """MGDT's evaluation protocol (its public colab): dopamine's preprocessing with sticky
    actions off and a JPEG round trip of every frame at `tf.io.encode_jpeg`'s default quality
    (95). MGDT's model emits full-set actions and maps them to the minimal set (NOOP where a
    game lacks the action), so the env keeps the minimal set; see `games.full_to_minimal`.

    Known deviation: we round-trip with OpenCV, whose libjpeg decoder uses the accurate integer
    IDCT; `tf.io.decode_jpeg`'s default is the fast IDCT. Measured on 200 random-play frames of
    MsPacman / Breakout, the two decodes differ by 1.7 / 0.8 gray levels on average (max 12),
    as much as the JPEG round trip itself changes the frame (1.2 / 0.2). Exact MGDT numbers
    need TensorFlow's decoder, which this module does not import.
    """
    return cls(sticky_action_prob=0.0, jpeg_quality=95)

  @property
  def max_episode_frames(self) -> int:
    return self.max_episode_steps * self.frame_skip


# ---------------------------------------------------------------------------------------------
# Game variants: ALE (mode, difficulty) pairs. Index = variant; variant 0 is the default game.

# Documented tables for the paper's online fine-tuning games. Variant 1 is the variant we believe
# the paper fine-tunes on, following Farebrother et al. (2018) "Generalization and
# Regularization in DQN": Breakout m12d0, Freeway m1d0, Hero m1d0 (UNVERIFIED against the
# Scaled QL paper). Further rows are other modes/difficulties these games offer in ALE.
VARIANTS: dict[str, tuple[tuple[int, int], ...]] = {
  "Breakout": ((0, 0), (12, 0), (0, 1), (12, 1), (4, 0), (8, 0)),
  "Freeway": ((0, 0), (1, 0), (4, 0), (0, 1), (1, 1), (4, 1)),
  "Hero": ((0, 0), (1, 0), (2, 0), (3, 0), (4, 0)),
}


@functools.cache
def _ale_modes_and_difficulties(game: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """ALE's available modes and difficulties of a game (loads the ROM once per process)."""
  import ale_py
  from ale_py import roms

  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  ale.loadROM(roms.get_rom_path(games.ale_rom_id(game)))
  modes = tuple(int(m) for m in ale.getAvailableModes())
  difficulties = tuple(int(d) for d in ale.getAvailableDifficulties())
  return modes, difficulties


def variants(game: str) -> tuple[tuple[int, int], ...]:
  """All variants of a game as (mode, difficulty) pairs; index = variant number.

  Games in `VARIANTS` use that table. For the others, variant 0 is ALE's default game (its first
  available mode, difficulty 0), followed by every other (mode, difficulty) pair in ALE's order
  (modes outer, difficulties inner).
  """
  games.validate_games(game)
  if game in VARIANTS:
    return VARIANTS[game]
  modes, difficulties = _ale_modes_and_difficulties(game)
  default = (modes[0], 0)
  return (default,) + tuple((m, d) for m in modes for d in difficulties if (m, d) != default)


def variant_settings(game: str, variant: int) -> tuple[int, int]:
  """(mode, difficulty) of `variant` of `game`; ValueError naming the valid variants."""
  table = variants(game)
  if isinstance(variant, bool) or not isinstance(variant, (int, np.integer)):
    raise ValueError(f"variant must be an int, got {variant!r}.")
  if not 0 <= variant < len(table):
    choices = ", ".join(f"{i} (mode {m}, difficulty {d})" for i, (m, d) in enumerate(table))
    raise ValueError(f"Unknown variant {variant} of {game}. Valid variants: {choices}.")
  return table[int(variant)]


# ---------------------------------------------------------------------------------------------
# One environment.


def _jpeg_round_trip(frame: np.ndarray, quality: int) -> np.ndarray:
  ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError("JPEG encoding failed.")
  return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


class _StackedFrames(gymnasium.Wrapper):
  """Stacks preprocessed 84x84 frames (newest last), caps episodes, reports clipped reward."""

  def __init__(self, env: gymnasium.Env, protocol: Protocol, seed: int | None):
    super().__init__(env)
    self._protocol = protocol
    self._pending_seed = seed
    self._stack = np.zeros((OBS_SIZE, OBS_SIZE, protocol.stack_size), np.uint8)
    self._episode_step = 0
    self.observation_space = gymnasium.spaces.Box(0, 255, self._stack.shape, np.uint8)

  def _push(self, frame: np.ndarray) -> np.ndarray:
    if self._protocol.jpeg_quality is not None:
      frame = _jpeg_round_trip(frame, self._protocol.jpeg_quality)
    self._stack[..., :-1] = self._stack[..., 1:]
    self._stack[..., -1] = frame
    return self._stack.copy()

  def _info(self, info: dict) -> dict:
    info = dict(info)
    info["lives"] = self.env.unwrapped.ale.lives()
    info["episode_step"] = self._episode_step
    return info

  def reset(self, *, seed=None, options=None):
    # The constructor's seed applies to the first reset only, as `gymnasium.make` would do.
    if seed is None:
      seed, self._pending_seed = self._pending_seed, None
    frame, info = self.env.reset(seed=seed, options=options)
    self._stack[:] = 0
    self._episode_step = 0
    return self._push(frame), self._info(info)

  def step(self, action):
    frame, reward, terminated, truncated, info = self.env.step(action)
    self._episode_step += 1
    truncated = bool(truncated) or self._episode_step >= self._protocol.max_episode_steps
    info = self._info(info)
    info["clipped_reward"] = float(np.clip(reward, -1.0, 1.0))
    return self._push(frame), float(reward), bool(terminated), truncated, info


def make_env(
  game: str, variant: int = 0, protocol: Protocol = Protocol(), seed: int | None = None
) -> gymnasium.Env:
  """One Atari env with the protocol (see the module docstring).

  Args:
    game: DQN Replay game name, e.g. "MsPacman".
    variant: index into `variants(game)`; 0 is the default game.
    protocol: the presentation protocol; defaults to DQN Replay's.
    seed: seeds ALE (sticky actions) on the first `reset()` called without a seed.

  Returns:
    A gymnasium env: obs uint8 [84, 84, stack_size]; actions index the minimal action set (or
    the 18 full actions with `protocol.full_action_set`); reward is the unclipped score change;
    info has "clipped_reward", "lives", "episode_step".
  """
  from ale_py.env import AtariEnv  # Lazy: importing this module must not load ALE.

  mode, difficulty = variant_settings(game, variant)
  env = AtariEnv(
    game=games.ale_rom_id(game),
    mode=mode,
    difficulty=difficulty,
    obs_type="grayscale",  # AtariPreprocessing reads ALE's screen itself; this is the cheapest.
    frameskip=1,  # AtariPreprocessing does the skip and the max-pool.
    repeat_action_probability=protocol.sticky_action_prob,
    full_action_space=protocol.full_action_set,
  )
  env = gymnasium.wrappers.AtariPreprocessing(
    env,
    noop_max=0,
    frame_skip=protocol.frame_skip,
    screen_size=OBS_SIZE,
    terminal_on_life_loss=False,
    grayscale_obs=True,
  )
  return _StackedFrames(env, protocol, seed)


# ---------------------------------------------------------------------------------------------
# Many environments at once.


def _channels_last(obs: np.ndarray) -> np.ndarray:
  """uint8 [N, S, 84, 84] -> [N, 84, 84, S]; cv2.merge is ~10x faster than numpy's transpose."""
  n, s, h, w = obs.shape
  out = np.empty((n, h, w, s), np.uint8)
  if s == 1 or s > 4:
    out[:] = obs.transpose(0, 2, 3, 1)
  else:
    cv2.merge([obs[:, k].reshape(n * h, w) for k in range(s)], dst=out.reshape(n * h, w, s))
  return out


class VectorEnv:
  """`num_envs` episodes of one game stepped together, with the protocol of `make_env`.

  Autoreset: when an episode ends (terminated or truncated) in `step`, that step returns the
  reward and the end flags of the finished episode together with the FIRST observation of the
  next episode, which has already begun; the final observation of the finished episode is never
  returned (DQN Replay never stores it either). So a policy can act on every returned
  observation and an evaluator only sums rewards until the flags fire.

  Backend: ale-py's threaded C++ `AtariVectorEnv` (`uses_ale_vector`), configured to the
  protocol, when `variant == 0` and `protocol.jpeg_quality is None`; its frames and rewards are
  bit-identical to gymnasium's `AtariPreprocessing` (tests/atari_test.py). Otherwise (game
  modes/difficulties, JPEG) the envs are `make_env` envs stepped one after another (measured
  at ~0.65x the C++ backend's steps/s on this 2-core machine). Sticky-action randomness is seeded differently in the two
  backends: same seeds give the same distribution, not the same episodes.

  Attributes:
    num_envs: N.
    num_actions: size of the action set (minimal, or 18 with `protocol.full_action_set`).
    uses_ale_vector: whether the C++ backend is used.
    last_info: dict of int32 [N] arrays from the last reset/step: "lives" and
      "episode_step" (agent steps into the current episode, 0 right after a reset).
  """

  def __init__(
    self,
    game: str,
    num_envs: int,
    variant: int = 0,
    protocol: Protocol = Protocol(),
    seed: int | None = 0,
    num_threads: int = 0,
  ):
    """Builds the envs; validates game and variant first.

    Args:
      game: DQN Replay game name.
      num_envs: number of parallel episodes N.
      variant: index into `variants(game)`.
      protocol: the presentation protocol.
      seed: env i is seeded with seed + i on the first `reset()` (None: unseeded).
      num_threads: C++ worker threads (0: ale-py's default); unused by the serial backend.
    """
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
      raise ValueError(f"num_envs must be a positive int, got {num_envs!r}.")
    variant_settings(game, variant)  # Fails early on a bad game or variant.
    self.game, self.variant, self.protocol = game, variant, protocol
    self.num_envs = num_envs
    self.num_actions = (
      games.MAX_NUM_ACTIONS if protocol.full_action_set else games.num_actions(game)
    )
    self.uses_ale_vector = variant == 0 and protocol.jpeg_quality is None
    self._seed = seed
    self._episode_step = np.zeros(num_envs, np.int32)
    self.last_info: dict[str, np.ndarray] = {}
    if self.uses_ale_vector:
      from ale_py.vector_env import AtariVectorEnv

      # Every preprocessing default of AtariVectorEnv that differs from DQN Replay is set here.
      self._vec = AtariVectorEnv(
        games.ale_rom_id(game),
        num_envs,
        num_threads=num_threads,
        max_num_frames_per_episode=protocol.max_episode_frames,
        repeat_action_probability=protocol.sticky_action_prob,
        full_action_space=protocol.full_action_set,
        autoreset_mode="SameStep",
        img_height=OBS_SIZE,
        img_width=OBS_SIZE,
        grayscale=True,
        stack_num=protocol.stack_size,
        frameskip=protocol.frame_skip,
        maxpool=True,
        noop_max=0,
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        use_fire_reset=False,
      )
    else:
      seeds = [None if seed is None else seed + i for i in range(num_envs)]
      self._envs = [make_env(game, variant, protocol, s) for s in seeds]

  def reset(self) -> np.ndarray:
    """Starts new episodes in all envs. Returns obs uint8 [N, 84, 84, stack_size]."""
    self._episode_step[:] = 0
    if self.uses_ale_vector:
      seed, self._seed = self._seed, None  # Seed once; later resets continue the RNG.
      obs, info = self._vec.reset(seed=seed)
      self.last_info = {"lives": info["lives"].astype(np.int32)}
      obs = _channels_last(obs)
    else:
      results = [env.reset() for env in self._envs]
      obs = np.stack([o for o, _ in results])
      self.last_info = {"lives": np.array([i["lives"] for _, i in results], np.int32)}
    self.last_info["episode_step"] = self._episode_step.copy()
    return obs

  def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps every env once.

    Args:
      actions: int [N], indices into the action set.

    Returns:
      obs: uint8 [N, 84, 84, stack_size] (first obs of the next episode where one ended).
      reward: float32 [N], unclipped game reward of this step.
      terminated: bool [N], the game ended.
      truncated: bool [N], the episode hit `protocol.max_episode_steps`.
    """
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
      raise ValueError(
        f"actions must be int [{self.num_envs}], got {actions.dtype} {actions.shape}."
      )
    if actions.min() < 0 or actions.max() >= self.num_actions:
      raise ValueError(f"actions must be in [0, {self.num_actions}), got {actions}.")
    if self.uses_ale_vector:
      obs, reward, terminated, truncated, info = self._vec.step(actions.astype(np.int32))
      obs, lives = _channels_last(obs), info["lives"].astype(np.int32)
    else:
      obs, reward, terminated, truncated, lives = self._step_serial(actions)
    reward = np.asarray(reward, np.float32)
    terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
    self._episode_step = np.where(terminated | truncated, 0, self._episode_step + 1)
    self.last_info = {"lives": lives, "episode_step": self._episode_step.astype(np.int32)}
    return obs, reward, terminated, truncated

  def _step_serial(self, actions: np.ndarray):
    obs = np.empty((self.num_envs, OBS_SIZE, OBS_SIZE, self.protocol.stack_size), np.uint8)
    reward = np.zeros(self.num_envs, np.float32)
    terminated = np.zeros(self.num_envs, bool)
    truncated = np.zeros(self.num_envs, bool)
    lives = np.zeros(self.num_envs, np.int32)
    for i, env in enumerate(self._envs):
      obs[i], reward[i], terminated[i], truncated[i], info = env.step(int(actions[i]))
      if terminated[i] or truncated[i]:
        obs[i], info = env.reset()
      lives[i] = info["lives"]
    return obs, reward, terminated, truncated, lives

  def close(self) -> None:
    if self.uses_ale_vector:
      self._vec.close()
    else:
      for env in self._envs:
        env.close()

  def __enter__(self) -> "VectorEnv":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_string("game", "Breakout", "DQN Replay game name.")
  flags.DEFINE_integer("variant", 0, "Index into the game's variants.")
  flags.DEFINE_integer("num_steps", 1000, "Random agent steps to play.")
  FLAGS = flags.FLAGS

  def _main(argv):
    del argv
    try:
      variant_settings(FLAGS.game, FLAGS.variant)
    except ValueError as e:
      raise SystemExit(f"error: {e}") from None
    print(f"Variants of {FLAGS.game} (mode, difficulty):")
    for i, (mode, difficulty) in enumerate(variants(FLAGS.game)):
      print(f"  {i}: mode {mode}, difficulty {difficulty}")
    with VectorEnv(FLAGS.game, 1, FLAGS.variant) as env:
      env.reset()
      rng, score, episodes = np.random.default_rng(0), 0.0, 0
      for _ in range(FLAGS.num_steps):
        _, reward, terminated, truncated = env.step(rng.integers(env.num_actions, size=1))
        score, episodes = score + float(reward[0]), episodes + int(terminated[0] | truncated[0])
    print(
      f"Random play, variant {FLAGS.variant}: {FLAGS.num_steps} steps, score {score:g}, "
      f"{episodes} episode(s) ended."
    )

  app.run(_main)
