"""Tests of the Atari protocol on real ALE ROMs (ale-py ships them; nothing is faked)."""

import ale_py
import cv2
import gymnasium
import numpy as np
import pytest
from ale_py import roms

from scaled_ql import atari, games

gymnasium.register_envs(ale_py)

NO_STICKY = atari.Protocol(sticky_action_prob=0.0)


def _raw_ale(game: str, mode: int | None = None, difficulty: int | None = None):
  """A bare ALE without sticky actions: the independent reference of these tests."""
  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  ale.setFloat("repeat_action_probability", 0.0)
  ale.loadROM(roms.get_rom_path(games.ale_rom_id(game)))
  if mode is not None:
    ale.setMode(mode)
    ale.setDifficulty(difficulty)
  ale.reset_game()
  return ale


def _dopamine_step(ale, full_action: int, frame_skip: int = 4):
  """One agent step as dopamine defines it: repeat the action, max-pool the last two frames."""
  reward, screens = 0.0, []
  for f in range(frame_skip):
    reward += ale.act(ale_py.Action(full_action))
    if f >= frame_skip - 2:
      screens.append(ale.getScreenGrayscale())
  frame = cv2.resize(np.maximum(*screens), (84, 84), interpolation=cv2.INTER_AREA)
  return frame, reward


def _gymnasium_rollout(game: str, variant: int, actions: np.ndarray):
  """Reference: gymnasium's AtariPreprocessing (noop_max=0, frame_skip=4 on a frameskip=1 env,
  84x84 grayscale, no life-loss terminal), our 4-frame zero-padded stack and same-step autoreset.

  Returns obs uint8 [T, 84, 84, 4], reward [T], ended bool [T].
  """
  mode, difficulty = atari.variant_settings(game, variant)
  env = gymnasium.make(
    f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, mode=mode, difficulty=difficulty
  )
  env = gymnasium.wrappers.AtariPreprocessing(
    env, noop_max=0, frame_skip=4, screen_size=84, terminal_on_life_loss=False, grayscale_obs=True
  )
  stack = np.zeros((84, 84, 4), np.uint8)

  def push(frame):
    stack[..., :-1] = stack[..., 1:]
    stack[..., -1] = frame
    return stack.copy()

  first = push(env.reset(seed=0)[0])
  all_obs, rewards, ended = [], [], []
  for a in actions:
    frame, r, terminated, truncated, _ = env.step(int(a))
    obs = push(frame)
    if terminated or truncated:
      stack[:] = 0
      obs = push(env.reset()[0])
    all_obs.append(obs)
    rewards.append(r)
    ended.append(terminated or truncated)
  env.close()
  return first, np.stack(all_obs), np.array(rewards), np.array(ended)


# -- Frame-for-frame equality with gymnasium's AtariPreprocessing, both VectorEnv backends.


@pytest.mark.parametrize(
  "game, variant", [("Breakout", 0), ("MsPacman", 0), ("Breakout", 1), ("Hero", 1)]
)
def test_vector_env_matches_gymnasium_preprocessing(game, variant):
  num_envs, num_steps = 2, 300
  rng = np.random.default_rng(0)
  actions = rng.integers(0, games.num_actions(game), (num_steps, num_envs))
  with atari.VectorEnv(game, num_envs, variant=variant, protocol=NO_STICKY) as env:
    assert env.uses_ale_vector == (variant == 0)
    first = env.reset()
    steps = [env.step(a) for a in actions]
  obs = np.stack([s[0] for s in steps], 1)  # [N, T, 84, 84, 4]
  reward = np.stack([s[1] for s in steps], 1)
  ended = np.stack([s[2] | s[3] for s in steps], 1)
  assert obs.dtype == np.uint8 and reward.dtype == np.float32
  for i in range(num_envs):
    ref_first, ref_obs, ref_reward, ref_ended = _gymnasium_rollout(game, variant, actions[:, i])
    np.testing.assert_array_equal(first[i], ref_first)
    for t in range(num_steps):  # Per step, so that a failure names the step.
      np.testing.assert_array_equal(obs[i, t], ref_obs[t], err_msg=f"env {i} step {t}")
    np.testing.assert_array_equal(reward[i], ref_reward)
    np.testing.assert_array_equal(ended[i], ref_ended)
  if game == "Breakout":
    assert ended.any(), "random Breakout play should lose all lives, exercising the autoreset"
  if game == "MsPacman":
    assert reward.max() >= 10, "rewards must be the unclipped score (a pellet is worth 10)"


def test_make_env_matches_dopamine_by_hand():
  env = atari.make_env("Breakout", protocol=NO_STICKY, seed=0)
  assert env.action_space.n == 4
  assert env.observation_space.shape == (84, 84, 4)
  obs, info = env.reset()
  assert obs.dtype == np.uint8 and obs.shape == (84, 84, 4)
  assert (obs[..., :3] == 0).all() and obs[..., 3].any()  # Zero padding, newest last.
  ale = _raw_ale("Breakout")
  full = games.minimal_to_full("Breakout")
  rng = np.random.default_rng(1)
  lives, lost_a_life = info["lives"], False
  for t in range(400):
    a = int(rng.integers(4))
    prev = obs
    obs, reward, terminated, truncated, info = env.step(a)
    frame, ref_reward = _dopamine_step(ale, int(full[a]))
    if terminated:
      break
    np.testing.assert_array_equal(obs[..., -1], frame, err_msg=f"step {t}")
    np.testing.assert_array_equal(obs[..., :-1], prev[..., 1:])
    assert reward == ref_reward and info["clipped_reward"] == np.clip(reward, -1, 1)
    assert not truncated and info["episode_step"] == t + 1
    lost_a_life |= info["lives"] < lives  # ...without ending the episode.
    lives = info["lives"]
  assert lost_a_life and terminated and info["lives"] == 0


def test_full_action_set_takes_ale_ids():
  protocol = atari.Protocol(sticky_action_prob=0.0, full_action_set=True)
  with (
    atari.VectorEnv("Breakout", 1, protocol=protocol) as full,
    atari.VectorEnv("Breakout", 1, protocol=NO_STICKY) as minimal,
  ):
    assert full.num_actions == 18 and minimal.num_actions == 4
    full.reset(), minimal.reset()
    # (full ALE id, minimal index with the same effect). RIGHTFIRE (11) and LEFTFIRE (12) are not
    # in Breakout's minimal set; with the ball in play they move the paddle as RIGHT / LEFT do.
    pairs = [(1, 1), (3, 2), (3, 2), (4, 3), (0, 0), (11, 2), (3, 2), (3, 2), (12, 3)]
    for full_id, min_id in pairs:
      assert full_id in (11, 12) or games.full_to_minimal("Breakout")[full_id] == min_id
      obs_full = full.step(np.array([full_id]))[0]
      obs_min = minimal.step(np.array([min_id]))[0]
      np.testing.assert_array_equal(obs_full, obs_min)
  assert atari.make_env("Pong", protocol=protocol).action_space.n == 18


def test_jpeg_round_trip_protocol():
  mgdt = atari.Protocol.mgdt()
  assert (mgdt.sticky_action_prob, mgdt.jpeg_quality, mgdt.full_action_set) == (0.0, 95, False)
  actions = np.random.default_rng(0).integers(0, 4, (40, 2))
  with (
    atari.VectorEnv("Breakout", 2, protocol=mgdt) as jpeg_env,
    atari.VectorEnv("Breakout", 2, protocol=NO_STICKY) as plain_env,
  ):
    assert not jpeg_env.uses_ale_vector
    jpeg_obs, plain_obs = jpeg_env.reset(), plain_env.reset()
    for a in actions:
      prev_jpeg = jpeg_obs
      jpeg_obs, plain_obs = jpeg_env.step(a)[0], plain_env.step(a)[0]
      for i in range(2):
        encoded = cv2.imencode(".jpg", plain_obs[i, ..., -1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        expected = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(jpeg_obs[i, ..., -1], expected)
      np.testing.assert_array_equal(jpeg_obs[..., :-1], prev_jpeg[..., 1:])
  diff = np.abs(jpeg_obs.astype(int) - plain_obs.astype(int))
  assert 0 < diff.mean() < 3  # Lossy, but close.


# -- Sticky actions.


class _StickyTracker:
  """Follows an episode in a sticky-free ALE, inferring each step's sticky pattern.

  ALE's sticky actions: on every frame, with probability p the previously applied action is
  applied again instead of the requested one. An agent step of 4 frames thus applies the
  previous action on its first k frames, k in 0..4, P(k >= 1) = p. From each candidate
  emulator state we try all k and keep the states whose preprocessed frame and reward match the
  observation (several can, so we keep a set). A step is "informative" when there is a single
  candidate, the action changed, and k = 0 is distinguishable from every k >= 1; that is
  decided before looking at the observation, so the hit rate on informative steps estimates p
  without bias.
  """

  def __init__(self, game: str):
    self._ale = _raw_ale(game)
    self._candidates = [(self._ale.cloneState(), 0)]  # (state, last applied action id).

  def _outcome(self, state, prev: int, action: int, k: int):
    self._ale.restoreState(state)
    reward, screens = 0.0, []
    for f in range(4):
      reward += self._ale.act(ale_py.Action(prev if f < k else action))
      if f >= 2:
        screens.append(self._ale.getScreenGrayscale())
    frame = cv2.resize(np.maximum(*screens), (84, 84), interpolation=cv2.INTER_AREA)
    new_state = self._ale.cloneState()
    return frame, reward, new_state, (prev if k == 4 else action)

  def step(self, action: int, frame: np.ndarray, reward: float) -> bool | None:
    """Returns whether the step was sticky if the step is informative, else None."""
    informative = len(self._candidates) == 1 and self._candidates[0][1] != action
    survivors = {}
    for state, prev in self._candidates:
      ks = range(5) if prev != action else [0]
      outcomes = [self._outcome(state, prev, action, k) for k in ks]
      if any((o[0] == outcomes[0][0]).all() and o[1] == outcomes[0][1] for o in outcomes[1:]):
        informative = False
      for k, (f, r, new_state, applied) in zip(ks, outcomes, strict=True):
        if (f == frame).all() and r == reward:
          survivors.setdefault((new_state.serialize(), applied), (new_state, applied, k))
    assert survivors, "the observation matches no sticky-action pattern"
    self._candidates = [(s, applied) for s, applied, _ in survivors.values()]
    if informative:  # Then the survivors are either {k = 0} or all have k >= 1.
      return next(iter(survivors.values()))[2] >= 1
    return None


@pytest.mark.parametrize("backend", ["make_env", "VectorEnv"])
def test_sticky_actions_repeat_the_previous_action_at_the_configured_rate(backend):
  protocol = atari.Protocol(sticky_action_prob=0.25)
  # Breakout without FIRE: the ball is never served, so the episode never ends and the paddle
  # (moved by NOOP/RIGHT/LEFT) shows the applied actions.
  moves = np.array([0, 2, 3])
  full = games.minimal_to_full("Breakout")
  if backend == "make_env":
    env = atari.make_env("Breakout", protocol=protocol, seed=3)
    env.reset()

    def step(a):
      obs, reward, *_ = env.step(a)
      return obs[..., -1], reward
  else:
    env = atari.VectorEnv("Breakout", 1, protocol=protocol, seed=3)
    assert env.uses_ale_vector
    env.reset()

    def step(a):
      obs, reward, *_ = env.step(np.array([a]))
      return obs[0, ..., -1], reward[0]

  tracker, hits = _StickyTracker("Breakout"), []
  rng = np.random.default_rng(1)
  for _ in range(250):
    a = int(rng.choice(moves))
    hit = tracker.step(int(full[a]), *step(a))
    if hit is not None:
      hits.append(hit)
  env.close()
  # ~100 informative steps: standard error ~0.045, so a 0.12 band is ~2.7 sigma.
  assert len(hits) >= 60
  assert abs(np.mean(hits) - 0.25) < 0.12, (np.mean(hits), len(hits))


# -- Episode cap.


@pytest.mark.parametrize("backend", ["make_env", "ale_vector", "serial"])
def test_step_cap_truncates_episodes(backend):
  protocol = atari.Protocol(sticky_action_prob=0.0, max_episode_steps=7)
  if backend == "make_env":
    env = atari.make_env("Pong", protocol=protocol)
    env.reset()
    for t in range(1, 8):
      _, _, terminated, truncated, info = env.step(0)
      assert not terminated and truncated == (t == 7) and info["episode_step"] == t
    return
  variant = 0 if backend == "ale_vector" else 1
  with atari.VectorEnv("Pong", 2, variant=variant, protocol=protocol) as env:
    assert env.uses_ale_vector == (backend == "ale_vector")
    env.reset()
    for t in range(1, 16):
      obs, _, terminated, truncated = env.step(np.zeros(2, np.int64))
      assert not terminated.any()
      assert (truncated == (t % 7 == 0)).all(), t
      if t % 7 == 0:  # The returned obs is the first of the next episode.
        assert (obs[..., :3] == 0).all() and obs[..., 3].any()
        assert (env.last_info["episode_step"] == 0).all()


# -- Variants.


def test_variant_tables():
  for game, table in atari.VARIANTS.items():
    modes, difficulties = atari._ale_modes_and_difficulties(game)
    assert table[0] == (modes[0], 0)
    assert len(set(table)) == len(table)
    assert all(m in modes and d in difficulties for m, d in table), game
  assert atari.variant_settings("Breakout", 1) == (12, 0)
  pong = atari.variants("Pong")  # Derived: modes (0, 1) x difficulties (0..3).
  assert (
    pong[0] == (0, 0) and len(pong) == 8 and set(pong) == {(m, d) for m in (0, 1) for d in range(4)}
  )
  assert atari.variants("BattleZone")[0] == (1, 0)  # Its first mode is 1.


@pytest.mark.parametrize("game, variant", [("Breakout", 1), ("Breakout", 2), ("Freeway", 1)])
def test_variant_changes_the_game(game, variant):
  mode, difficulty = atari.variant_settings(game, variant)
  envs = {v: atari.make_env(game, v, NO_STICKY) for v in (0, variant)}
  for v, env in envs.items():
    env.reset()
    state = env.unwrapped.ale.cloneState()  # Read the mode and difficulty back from ALE.
    assert (state.getCurrentMode(), state.getDifficulty()) == atari.variant_settings(game, v)
  rams, frames_differ = {}, False
  rng = np.random.default_rng(0)
  for _ in range(60):
    a = int(rng.integers(games.num_actions(game)))
    obs = {v: env.step(a)[0] for v, env in envs.items()}
    frames_differ |= bool((obs[0] != obs[variant]).any())
  rams = {v: env.unwrapped.ale.getRAM() for v, env in envs.items()}
  assert frames_differ and (rams[0] != rams[variant]).any()
  # The same (mode, difficulty) set on a bare ALE gives the variant's RAM: it is that game.
  ref = _raw_ale(game, mode, difficulty)
  rng = np.random.default_rng(0)
  for _ in range(60):
    _dopamine_step(ref, int(games.minimal_to_full(game)[rng.integers(games.num_actions(game))]))
  np.testing.assert_array_equal(ref.getRAM(), rams[variant])


# -- Every game, both backends.


@pytest.mark.parametrize("game", games.ALL_GAMES)
def test_every_game_builds_resets_and_backends_agree(game):
  # make_env sets variant 0's (mode, difficulty) explicitly; AtariVectorEnv leaves ALE's default.
  # Equal frames show that variant 0 is the default game, and both backends run every game.
  env = atari.make_env(game, protocol=NO_STICKY)
  obs, _ = env.reset()
  state = env.unwrapped.ale.cloneState()
  assert (state.getCurrentMode(), state.getDifficulty()) == atari.variants(game)[0]
  with atari.VectorEnv(game, 1, protocol=NO_STICKY) as vec:
    np.testing.assert_array_equal(vec.reset()[0], obs)
    assert vec.num_actions == env.action_space.n == games.num_actions(game)
    rng = np.random.default_rng(0)
    for t in range(20):
      a = int(rng.integers(vec.num_actions))
      obs, reward, terminated, truncated, _ = env.step(a)
      vec_obs, vec_reward, vec_terminated, _ = vec.step(np.array([a]))
      if terminated or truncated:
        break
      np.testing.assert_array_equal(vec_obs[0], obs, err_msg=f"step {t}")
      assert vec_reward[0] == reward and not vec_terminated[0]


# -- Bad input.


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match="'breakout' \\(did you mean 'Breakout'\\?\\)"):
    atari.make_env("breakout")
  with pytest.raises(ValueError, match="Unknown Atari game 'Tetris'.*Valid games"):
    atari.VectorEnv("Tetris", 2)
  with pytest.raises(ValueError, match="Unknown variant 6 of Breakout. Valid variants: 0 "):
    atari.make_env("Breakout", variant=6)
  with pytest.raises(ValueError, match="Unknown variant -1 of Pong.*7 \\(mode 1, difficulty 3\\)"):
    atari.VectorEnv("Pong", 2, variant=-1)
  for bad in (1.5, True, "1"):
    with pytest.raises(ValueError, match="variant must be an int"):
      atari.variant_settings("Pong", bad)
  for field, value in [
    ("sticky_action_prob", 1.5),
    ("jpeg_quality", 0),
    ("jpeg_quality", 101),
    ("max_episode_steps", 0),
    ("frame_skip", 0),
    ("stack_size", 2.0),
  ]:
    with pytest.raises(ValueError, match=field):
      atari.Protocol(**{field: value})
  with pytest.raises(ValueError, match="num_envs"):
    atari.VectorEnv("Pong", 0)
  with atari.VectorEnv("Pong", 2, protocol=NO_STICKY) as env:
    env.reset()
    with pytest.raises(ValueError, match="actions must be int \\[2\\]"):
      env.step(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="actions must be int"):
      env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="actions must be in \\[0, 6\\)"):
      env.step(np.array([0, 6]))
