"""Tests of the game tables against ALE's own ROM settings (real ROMs from ale-py)."""

import ale_py
import numpy as np
import pytest
from ale_py import roms

from scaled_ql import games


def _ale(game: str) -> ale_py.ALEInterface:
  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  ale.loadROM(roms.get_rom_path(games.ale_rom_id(game)))
  return ale


def test_game_lists():
  assert len(games.ALL_GAMES) == len(set(games.ALL_GAMES)) == 46
  assert set(games.HELD_OUT_GAMES) == {"Alien", "MsPacman", "Pong", "SpaceInvaders", "StarGunner"}
  assert len(games.MGDT_TRAIN_GAMES) == 41
  assert not set(games.MGDT_TRAIN_GAMES) & set(games.HELD_OUT_GAMES)
  assert set(games.MGDT_TRAIN_GAMES) | set(games.HELD_OUT_GAMES) == set(games.ALL_GAMES)
  assert len(games.TRAIN_GAMES) == 40
  assert set(games.MGDT_TRAIN_GAMES) - set(games.TRAIN_GAMES) == {"RoadRunner"}
  assert list(games.MINIMAL_ACTIONS) == list(games.ALL_GAMES)


def test_every_game_has_an_ale_rom():
  missing = [g for g in games.ALL_GAMES if roms.get_rom_path(games.ale_rom_id(g)) is None]
  assert not missing
  assert games.ale_rom_id("MsPacman") == "ms_pacman"
  assert games.ale_rom_id("UpNDown") == "up_n_down"
  assert games.ale_rom_id("Hero") == "hero"


@pytest.mark.parametrize("game", games.ALL_GAMES)
def test_minimal_actions_equal_ale(game):
  ale_ids = tuple(a.value for a in _ale(game).getMinimalActionSet())
  assert games.MINIMAL_ACTIONS[game] == ale_ids


@pytest.mark.parametrize("game", games.ALL_GAMES)
def test_action_tables_round_trip(game):
  to_full = games.minimal_to_full(game)
  to_min = games.full_to_minimal(game)
  n = games.num_actions(game)
  assert to_full.dtype == to_min.dtype == np.int32
  assert to_full.shape == (n,) and to_min.shape == (games.MAX_NUM_ACTIONS,)
  np.testing.assert_array_equal(to_min[to_full], np.arange(n))
  illegal = np.setdiff1d(np.arange(games.MAX_NUM_ACTIONS), to_full)
  assert (to_min[illegal] == -1).all()
  assert to_full[0] == 0  # NOOP is index 0 of every minimal set (MGDT's NOOP fallback needs it).


def test_action_table_examples():
  np.testing.assert_array_equal(games.minimal_to_full("Breakout"), [0, 1, 3, 4])
  np.testing.assert_array_equal(
    games.full_to_minimal("Freeway"), [0, -1, 1, -1, -1, 2] + [-1] * 12
  )  # NOOP, UP, DOWN.
  assert games.FULL_ACTION_NAMES[games.minimal_to_full("Freeway")[1]] == "UP"
  assert games.num_actions("Pong") == 6


def test_reference_scores():
  expected = set(games.ALL_GAMES) - set(games.GAMES_WITHOUT_HUMAN_SCORE)
  assert set(games.HUMAN_SCORES) == set(games.RANDOM_SCORES) == expected
  assert all(games.HUMAN_SCORES[g] > games.RANDOM_SCORES[g] for g in expected)
  # Hand-computed from dqn_zoo's table: Breakout random 1.7, human 30.5.
  assert games.human_normalized_score("Breakout", 1.7) == 0.0
  assert games.human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
  assert games.human_normalized_score("Breakout", 16.1) == pytest.approx(0.5)
  assert games.human_normalized_score("Pong", -20.7 + 2 * 35.3) == pytest.approx(2.0)


@pytest.mark.parametrize("game", games.GAMES_WITHOUT_HUMAN_SCORE)
def test_no_human_score_is_a_clear_error(game):
  with pytest.raises(ValueError, match=f"{game} has no official human reference score"):
    games.human_normalized_score(game, 100.0)


def test_validate_games():
  assert games.validate_games("Pong") == ("Pong",)
  assert games.validate_games(["Pong", "Hero"]) == ("Pong", "Hero")
  with pytest.raises(ValueError, match=r"'ms_pacman' \(did you mean 'MsPacman'\?\).*Zaxxon"):
    games.validate_games(["Pong", "ms_pacman"])
  with pytest.raises(ValueError, match="'Tetris'.*Valid games"):
    games.num_actions("Tetris")
  with pytest.raises(ValueError, match="'Montezuma'"):
    games.ale_rom_id("Montezuma")
