"""ReplayBuffer: rows as DQN Replay files hold them, the files' transitions and dopamine's,
wrap-around, the sampling law, determinism and state()/restore()."""

import numpy as np
import pytest
import replay_fixtures as rf

from scaled_ql import atari
from scaled_ql.data import transitions
from scaled_ql.data.replay_buffer import ReplayBuffer

N_STEP, GAMMA, NUM_ENVS, NUM_STEPS = 3, 0.99, 2, 400
# Breakout's upper rows score 4 and 7: scaled rewards exercise the buffer's clipping.
REWARD_SCALE = 4.0


@pytest.fixture(scope="module")
def played():
  """Random play of real Breakout, 2 envs, 60-step episodes: [(obs, action, reward, ended)]."""
  env = atari.VectorEnv("Breakout", NUM_ENVS, protocol=atari.Protocol(max_episode_steps=60))
  rng = np.random.default_rng(0)
  obs, steps = env.reset(), []
  for _ in range(NUM_STEPS):
    action = rng.integers(env.num_actions, size=NUM_ENVS)
    next_obs, reward, terminated, truncated = env.step(action)
    steps.append((obs, action, reward * REWARD_SCALE, terminated | truncated))
    obs = next_obs
  env.close()
  assert sum(s[3].sum() for s in steps) >= 10 and any(s[2].any() for s in steps)
  return steps


@pytest.fixture(scope="module")
def streams(played):
  """Each env's rows the way `data_prep.collect` writes them, and their transitions.

  Returns a list over envs of dicts: frame/action/reward/terminal [L], count [NUM_STEPS] (rows
  after each step), and the full stream's transitions keyed by state row.
  """
  out = []
  for e in range(NUM_ENVS):
    rows, count, new = [], [], True
    for obs, action, reward, ended in played:
      if new:  # 3 all-zero padding rows open every episode
        rows += [(np.zeros((84, 84), np.uint8), 0, 0.0, 0)] * 3
      rows.append((obs[e, ..., -1], action[e], np.clip(reward[e], -1, 1), int(ended[e])))
      count.append(len(rows))
      new = ended[e]
    frame, action, reward, terminal = (np.array(x) for x in zip(*rows, strict=True))
    reward, terminal = reward.astype(np.float32), terminal.astype(np.uint8)
    valid, ret, discount, length = transitions.transition_tables(
      terminal, reward, 0, len(rows), 0, N_STEP, GAMMA
    )

    def stack(last, frame=frame):
      return transitions.stack_frames([frame[last - j] for j in range(3, -1, -1)])

    ref = dict(
      obs=stack(valid), action=action[valid].astype(np.int32), reward=ret, discount=discount,
      next_obs=stack(valid + length),
    )  # fmt: skip
    out.append(dict(
      frame=frame, action=action, reward=reward, terminal=terminal, count=np.array(count),
      valid=valid.astype(np.int64), ref=ref, index={int(v): k for k, v in enumerate(valid)},
    ))  # fmt: skip
  return out


def _feed(buf, played, start=0, stop=NUM_STEPS):
  for obs, action, reward, ended in played[start:stop]:
    buf.add(obs, action, reward, ended)


def _expected_valid(stream, t, ring):
  """Rows of the states valid after step t with R = ring rows per stream."""
  count = stream["count"][t]
  v = stream["valid"]
  return v[(v + N_STEP < count) & (v >= count - ring + 3)]


def _check_transitions(buf, streams, e, rows):
  got = buf.transitions_at(np.full(len(rows), e), rows)
  k = np.array([streams[e]["index"][int(r)] for r in rows], np.int64)
  for name, ref in streams[e]["ref"].items():
    np.testing.assert_array_equal(getattr(got, name), ref[k], err_msg=name)


def _dopamine_stream(streams, e, ring):
  """A dopamine replay buffer of `ring` rows fed env e's rows (it adds the padding itself)."""
  s, dop = streams[e], rf.make_dopamine_buffer(ring, N_STEP, GAMMA)
  real = np.ones(len(s["frame"]), bool)
  real[np.flatnonzero(np.r_[1, s["terminal"][:-1]])[:, None] + np.arange(3)] = False
  for i in np.flatnonzero(real):
    dop.add(s["frame"][i], int(s["action"][i]), float(s["reward"][i]), int(s["terminal"][i]))
  return dop


def _batch_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_rows_and_transitions_equal_the_files_and_dopamine(played, streams):
  buf = ReplayBuffer(2 * 500, NUM_ENVS, N_STEP, GAMMA)
  for t in range(NUM_STEPS):
    _feed(buf, played, t, t + 1)
    if t in (0, 3, 4, 5, 60, 61, 62, 200) or t == NUM_STEPS - 1:  # blocks of many sizes
      stream_ids, rows = buf.valid_states()
      for e in range(NUM_ENVS):
        np.testing.assert_array_equal(rows[stream_ids == e], _expected_valid(streams[e], t, 500))
  state, (stream_ids, all_rows) = buf.state(), buf.valid_states()
  for e in range(NUM_ENVS):
    s = streams[e]
    count = s["count"][-1]
    assert state["add_count"][e] == count
    for name, key in [("frame", "observation"), ("action", "action"), ("reward", "reward")]:
      np.testing.assert_array_equal(state[key][e, :count], s[name], err_msg=name)
    np.testing.assert_array_equal(state["terminal"][e, :count], s["terminal"])
    rows = all_rows[stream_ids == e]
    _check_transitions(buf, streams, e, rows)
    # Dopamine's own buffer, fed the same play, holds the same rows and the same transitions.
    dop = _dopamine_stream(streams, e, 500)
    np.testing.assert_array_equal(dop._store["observation"][:count], s["frame"])
    np.testing.assert_array_equal(dop._store["terminal"][:count], s["terminal"])
    assert [i for i in range(500) if dop.is_valid_transition(i)] == list(rows)
    d = dop.sample_transition_batch(len(rows), indices=rows)
    got = buf.transitions_at(np.full(len(rows), e), rows)
    np.testing.assert_array_equal(got.obs, d[0])
    np.testing.assert_array_equal(got.action, d[1])
    np.testing.assert_allclose(got.reward, d[2], rtol=1e-6)
    np.testing.assert_array_equal(got.next_obs, d[3])
    np.testing.assert_allclose(got.discount, GAMMA**N_STEP * (1 - d[6]), rtol=1e-6)


@pytest.mark.parametrize("ring", [7, 50])
def test_wrap_around_never_samples_overwritten_rows(played, streams, ring):
  buf = ReplayBuffer(NUM_ENVS * ring, NUM_ENVS, N_STEP, GAMMA, local_batch_size=16)
  fields = ("obs", "action", "reward", "discount", "next_obs")

  def key(e, k):  # the content of env e's k-th reference transition
    return tuple(streams[e]["ref"][n][k].tobytes() for n in fields)

  stream_of = {key(e, k): e for e in range(NUM_ENVS) for k in range(len(streams[e]["valid"]))}
  hit = set()
  for t in range(NUM_STEPS):
    _feed(buf, played, t, t + 1)
    stream_ids, rows = buf.valid_states()
    for e in range(NUM_ENVS):
      expected = _expected_valid(streams[e], t, ring)
      np.testing.assert_array_equal(rows[stream_ids == e], expected)
      if t % 25 == 0 and len(expected):
        _check_transitions(buf, streams, e, expected)
    if len(rows) and t % 5 == 0:
      batch = buf.batch(t)
      held = {key(e, streams[e]["index"][int(r)]) for e, r in zip(stream_ids, rows, strict=True)}
      for b in range(16):
        sampled = tuple(getattr(batch, n)[b].tobytes() for n in fields)
        assert sampled in held, f"step {t}: sampled a transition that is not a held valid state"
        hit.add(stream_of[sampled])
  assert hit == set(range(NUM_ENVS))
  # Dopamine's ring of the same size agrees, except that it also refuses the state 3 rows
  # after its cursor (whose stack rows are all still held).
  for e in range(NUM_ENVS):
    count, dop = streams[e]["count"][-1], _dopamine_stream(streams, e, ring)
    ours = set(_expected_valid(streams[e], NUM_STEPS - 1, ring) % ring)
    theirs = {i for i in range(ring) if dop.is_valid_transition(i)}
    assert theirs <= ours and ours - theirs <= {(count + 3) % ring}


def _synthetic(num_envs, steps, episode_lengths):
  """Frames that name their (env, step): pixel 0 = env + 1, pixels 1-2 = step."""
  obs = np.zeros((num_envs, 84, 84, 4), np.uint8)
  obs[:, 0, 0, -1] = np.arange(num_envs) + 1
  obs[:, 0, 1, -1], obs[:, 0, 2, -1] = steps % 256, steps // 256
  ended = (steps + 1) % np.asarray(episode_lengths) == 0
  return obs, np.zeros(num_envs, np.int32), np.full(num_envs, 5.0), ended


def _names(frames):
  """uint8 [B, 84, 84] synthetic frames -> [(env, step)]."""
  f = frames[:, 0, :3].astype(int)
  return list(zip(f[:, 0] - 1, f[:, 1] + 256 * f[:, 2], strict=True))


def test_sampling_is_uniform_over_valid_states_of_all_streams():
  buf = ReplayBuffer(3 * 64, 3, N_STEP, GAMMA, local_batch_size=64)
  for step in range(100):  # wrapped; streams with episodes of 5, 9 and 40 steps
    buf.add(*_synthetic(3, np.full(3, step), [5, 9, 40]))
  stream_ids, rows = buf.valid_states()
  counts = dict.fromkeys(_names(buf.state()["observation"][stream_ids, rows % 64]), 0)
  for step in range(300):
    for name in _names(buf.batch(step).obs[..., -1]):
      counts[name] += 1  # KeyError: not a valid state
  v, c = len(counts), np.array(list(counts.values()))
  expected = 300 * 64 / v
  assert ((c - expected) ** 2 / expected).sum() < v + 6 * np.sqrt(2 * v)  # chi-square
  # Rewards 5.0 were clipped to 1: n-step returns of 1 + g + g^2 away from episode ends.
  assert np.isclose(buf.batch(0).reward.max(), 1 + GAMMA + GAMMA**2)


def test_batch_is_deterministic_and_needs_a_valid_transition():
  buf = ReplayBuffer(2 * 32, 2, N_STEP, GAMMA, seed=3, local_batch_size=8)
  with pytest.raises(ValueError, match="no valid transition"):
    buf.batch(0)
  for step in range(3):  # 3 padding rows + 3 rows: row 3 needs row 3 + n_step = 6
    buf.add(*_synthetic(2, np.full(2, step), [50, 50]))
  with pytest.raises(ValueError, match="no valid transition"):
    buf.batch(0)
  buf.add(*_synthetic(2, np.full(2, 3), [50, 50]))
  assert len(buf.valid_states()[0]) == 2
  first = buf.batch(7)
  assert _batch_equal(buf.batch(7), first) and not _batch_equal(buf.batch(8), first)
  assert first.obs.shape == first.next_obs.shape == (8, 84, 84, 4)
  assert first.action.dtype == first.game_id.dtype == np.int32
  assert first.reward.dtype == first.discount.dtype == np.float32
  assert next(iter(buf.iterate(7)))[0].tobytes() == first.obs.tobytes()
  other = ReplayBuffer(2 * 32, 2, N_STEP, GAMMA, seed=4, local_batch_size=8)
  other.restore(buf.state())
  assert not _batch_equal(other.batch(7), first)


@pytest.mark.parametrize("just_ended", [True, False])
def test_state_restore_continues_exactly(played, just_ended):
  # After an episode end the next row opens an episode (padding); mid-episode it does not.
  t = next(t for t in range(100, NUM_STEPS) if (played[t - 1][3] == just_ended).all())
  buf = ReplayBuffer(2 * 150, NUM_ENVS, N_STEP, GAMMA, local_batch_size=32)
  _feed(buf, played, 0, t)
  resumed = ReplayBuffer(2 * 150, NUM_ENVS, N_STEP, GAMMA, local_batch_size=32)
  resumed.restore(buf.state())
  assert resumed.describe() == buf.describe()
  assert all(_batch_equal(buf.batch(s), resumed.batch(s)) for s in range(5))
  _feed(buf, played, t, t + 40)  # the restored episode flags open the next episode
  _feed(resumed, played, t, t + 40)
  assert all(_batch_equal(buf.batch(s), resumed.batch(s)) for s in range(5, 10))
  for name, value in buf.state().items():
    np.testing.assert_array_equal(resumed.state()[name], value, err_msg=name)
  resumed.restore({})  # a fresh run: nothing saved
  assert _batch_equal(buf.batch(11), resumed.batch(11))
  with pytest.raises(ValueError, match=r"capacity 300\).*capacity 200 = 2 streams x 100 rows"):
    ReplayBuffer(2 * 100, NUM_ENVS, N_STEP, GAMMA).restore(buf.state())
  with pytest.raises(ValueError, match="not a ReplayBuffer's state"):
    resumed.restore({"step": np.zeros(())})


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(capacity=0), "capacity must be an int >= 2"),
    (dict(num_envs=0), "num_envs must be an int >= 1"),
    (dict(capacity=101), "multiple of num_envs"),
    (dict(capacity=12), "cannot hold one transition"),
    (dict(n_step=0), "n_step must be"),
    (dict(gamma=1.5), "gamma must be"),
    (dict(seed=-1), "seed must be"),
    (dict(local_batch_size=0), "local_batch_size must be"),
    (dict(game_id=-1), "game_id must be"),
  ],
)
def test_bad_arguments_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ReplayBuffer(**{**dict(capacity=100, num_envs=2, n_step=3, gamma=0.99), **kwargs})


def test_add_checks_shapes():
  buf = ReplayBuffer(100, 2)
  obs, action, reward, ended = _synthetic(2, np.zeros(2, int), [5, 5])
  with pytest.raises(ValueError, match=r"obs must be uint8 \[2, 84, 84, 4\]"):
    buf.add(obs[..., 0], action, reward, ended)
  with pytest.raises(ValueError, match=r"ended must have shape \(2,\)"):
    buf.add(obs, action, reward, ended[:1])


def test_end_episodes_marks_the_cut_row_terminal_and_pads_the_next_episode():
  buffer = ReplayBuffer(capacity=40, num_envs=2, n_step=2, local_batch_size=4)
  obs = np.full((2, 84, 84, 4), 7, np.uint8)
  for t in range(6):  # Env 0's episode ends at t = 5; env 1's is still running.
    buffer.add(obs, np.zeros(2, np.int32), np.zeros(2), np.array([t == 5, False]))
  buffer.end_episodes()
  state = buffer.state()
  last = (state["add_count"] - 1) % 20
  assert state["terminal"][0, last[0]] == 1 and state["terminal"][1, last[1]] == 1
  assert state["new_episode"].all()
  before = state["add_count"].copy()
  buffer.add(obs, np.zeros(2, np.int32), np.zeros(2), np.zeros(2, bool))
  np.testing.assert_array_equal(buffer.state()["add_count"], before + 4)  # 3 padding rows + 1.
