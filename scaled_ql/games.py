"""Atari game tables: game lists, action sets and reference scores (data only).

Game names are the DQN Replay directory names (CamelCase, e.g. "MsPacman"); ALE calls the
same games by snake_case ROM ids ("ms_pacman"), see `ale_rom_id`. Nothing here imports ALE,
so the tables can be read anywhere (the data layer, reports) without loading ROMs;
tests/games_test.py checks the action tables against ALE for every game.
"""

import re

import numpy as np

# The 46 Atari games of RL Unplugged (Gulcehre et al. 2020), which are the games the
# Multi-Game Decision Transformer and Scaled Q-Learning draw from.
ALL_GAMES: tuple[str, ...] = (
  "Alien", "Amidar", "Assault", "Asterix", "Atlantis", "BankHeist", "BattleZone", "BeamRider",
  "Boxing", "Breakout", "Carnival", "Centipede", "ChopperCommand", "CrazyClimber", "DemonAttack",
  "DoubleDunk", "Enduro", "FishingDerby", "Freeway", "Frostbite", "Gopher", "Gravitar", "Hero",
  "IceHockey", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "NameThisGame",
  "Phoenix", "Pong", "Pooyan", "Qbert", "Riverraid", "RoadRunner", "Robotank", "Seaquest",
  "SpaceInvaders", "StarGunner", "TimePilot", "UpNDown", "VideoPinball", "WizardOfWor",
  "YarsRevenge", "Zaxxon",
)  # fmt: skip

# Held out from pretraining in both MGDT and Scaled QL (used for offline fine-tuning).
HELD_OUT_GAMES: tuple[str, ...] = ("Alien", "MsPacman", "Pong", "SpaceInvaders", "StarGunner")

# MGDT's 41 training games: the 46 minus the held-out 5.
MGDT_TRAIN_GAMES: tuple[str, ...] = tuple(g for g in ALL_GAMES if g not in HELD_OUT_GAMES)

# Scaled QL trains on 40 games: MGDT's 41 minus one. That the dropped game is RoadRunner is
# reported by a third party and UNVERIFIED against the paper; the lead binds the training list
# in gin, so override it there if the paper's list turns out different.
TRAIN_GAMES: tuple[str, ...] = tuple(g for g in MGDT_TRAIN_GAMES if g != "RoadRunner")

# ALE's full action set has 18 actions (ids 0..17: NOOP, FIRE, UP, RIGHT, LEFT, DOWN, UPRIGHT,
# UPLEFT, DOWNRIGHT, DOWNLEFT, UPFIRE, RIGHTFIRE, LEFTFIRE, DOWNFIRE, UPRIGHTFIRE, UPLEFTFIRE,
# DOWNRIGHTFIRE, DOWNLEFTFIRE).
MAX_NUM_ACTIONS = 18
FULL_ACTION_NAMES: tuple[str, ...] = (
  "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
  "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
  "DOWNLEFTFIRE",
)  # fmt: skip

_ALL18 = tuple(range(MAX_NUM_ACTIONS))

# Each game's minimal action set as full-ALE action ids, in ALE's order. DQN Replay actions
# (and our Q-heads) index into this tuple. Read from ale-py 0.12.1's getMinimalActionSet();
# they also agree with the limited action sets in MGDT's public colab, which date from the
# atari-py ROMs the DQN Replay data was recorded with.
MINIMAL_ACTIONS: dict[str, tuple[int, ...]] = {
  "Alien": _ALL18,
  "Amidar": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13),
  "Assault": (0, 1, 2, 3, 4, 11, 12),
  "Asterix": (0, 2, 3, 4, 5, 6, 7, 8, 9),
  "Atlantis": (0, 1, 11, 12),
  "BankHeist": _ALL18,
  "BattleZone": _ALL18,
  "BeamRider": (0, 1, 2, 3, 4, 6, 7, 11, 12),
  "Boxing": _ALL18,
  "Breakout": (0, 1, 3, 4),
  "Carnival": (0, 1, 3, 4, 11, 12),
  "Centipede": _ALL18,
  "ChopperCommand": _ALL18,
  "CrazyClimber": (0, 2, 3, 4, 5, 6, 7, 8, 9),
  "DemonAttack": (0, 1, 3, 4, 11, 12),
  "DoubleDunk": _ALL18,
  "Enduro": (0, 1, 3, 4, 5, 8, 9, 11, 12),
  "FishingDerby": _ALL18,
  "Freeway": (0, 2, 5),
  "Frostbite": _ALL18,
  "Gopher": (0, 1, 2, 3, 4, 10, 11, 12),
  "Gravitar": _ALL18,
  "Hero": _ALL18,
  "IceHockey": _ALL18,
  "Jamesbond": _ALL18,
  "Kangaroo": _ALL18,
  "Krull": _ALL18,
  "KungFuMaster": (0, 2, 3, 4, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17),
  "MsPacman": (0, 2, 3, 4, 5, 6, 7, 8, 9),
  "NameThisGame": (0, 1, 3, 4, 11, 12),
  "Phoenix": (0, 1, 3, 4, 5, 11, 12, 13),
  "Pong": (0, 1, 3, 4, 11, 12),
  "Pooyan": (0, 1, 2, 5, 10, 13),
  "Qbert": (0, 1, 2, 3, 4, 5),
  "Riverraid": _ALL18,
  "RoadRunner": _ALL18,
  "Robotank": _ALL18,
  "Seaquest": _ALL18,
  "SpaceInvaders": (0, 1, 3, 4, 11, 12),
  "StarGunner": _ALL18,
  "TimePilot": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13),
  "UpNDown": (0, 1, 2, 5, 10, 13),
  "VideoPinball": (0, 1, 2, 3, 4, 5, 10, 11, 12),
  "WizardOfWor": (0, 1, 2, 3, 4, 5, 10, 11, 12, 13),
  "YarsRevenge": _ALL18,
  "Zaxxon": _ALL18,
}

# Reference scores, copied from DeepMind's dqn_zoo `dqn_zoo/atari_data.py` (random agent and
# professional human tester; 57 games, episodes capped at 108k frames, up to 30 no-op starts).
# Carnival and Pooyan are not in that table and have no official human score, so they are
# deliberately absent here: `human_normalized_score` raises for them, and aggregate tables
# must report them in raw score only (or leave them out, saying so).
RANDOM_SCORES: dict[str, float] = {
  "Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "Atlantis": 12850.0,
  "BankHeist": 14.2, "BattleZone": 2360.0, "BeamRider": 363.9, "Boxing": 0.1, "Breakout": 1.7,
  "Centipede": 2090.9, "ChopperCommand": 811.0, "CrazyClimber": 10780.5, "DemonAttack": 152.1,
  "DoubleDunk": -18.6, "Enduro": 0.0, "FishingDerby": -91.7, "Freeway": 0.0, "Frostbite": 65.2,
  "Gopher": 257.6, "Gravitar": 173.0, "Hero": 1027.0, "IceHockey": -11.2, "Jamesbond": 29.0,
  "Kangaroo": 52.0, "Krull": 1598.0, "KungFuMaster": 258.5, "MsPacman": 307.3,
  "NameThisGame": 2292.3, "Phoenix": 761.4, "Pong": -20.7, "Qbert": 163.9, "Riverraid": 1338.5,
  "RoadRunner": 11.5, "Robotank": 2.2, "Seaquest": 68.4, "SpaceInvaders": 148.0,
  "StarGunner": 664.0, "TimePilot": 3568.0, "UpNDown": 533.4, "VideoPinball": 16256.9,
  "WizardOfWor": 563.5, "YarsRevenge": 3092.9, "Zaxxon": 32.5,
}  # fmt: skip
HUMAN_SCORES: dict[str, float] = {
  "Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "Atlantis": 29028.1,
  "BankHeist": 753.1, "BattleZone": 37187.5, "BeamRider": 16926.5, "Boxing": 12.1,
  "Breakout": 30.5, "Centipede": 12017.0, "ChopperCommand": 7387.8, "CrazyClimber": 35829.4,
  "DemonAttack": 1971.0, "DoubleDunk": -16.4, "Enduro": 860.5, "FishingDerby": -38.7,
  "Freeway": 29.6, "Frostbite": 4334.7, "Gopher": 2412.5, "Gravitar": 3351.4, "Hero": 30826.4,
  "IceHockey": 0.9, "Jamesbond": 302.8, "Kangaroo": 3035.0, "Krull": 2665.5,
  "KungFuMaster": 22736.3, "MsPacman": 6951.6, "NameThisGame": 8049.0, "Phoenix": 7242.6,
  "Pong": 14.6, "Qbert": 13455.0, "Riverraid": 17118.0, "RoadRunner": 7845.0, "Robotank": 11.9,
  "Seaquest": 42054.7, "SpaceInvaders": 1668.7, "StarGunner": 10250.0, "TimePilot": 5229.2,
  "UpNDown": 11693.2, "VideoPinball": 17667.9, "WizardOfWor": 4756.5, "YarsRevenge": 54576.9,
  "Zaxxon": 9173.3,
}  # fmt: skip
GAMES_WITHOUT_HUMAN_SCORE: tuple[str, ...] = ("Carnival", "Pooyan")


def validate_games(games) -> tuple[str, ...]:
  """Checks that every name is one of `ALL_GAMES` (exact CamelCase spelling).

  Args:
    games: a game name or an iterable of game names.

  Returns:
    The names as a tuple, in the given order.

  Raises:
    ValueError: naming the unknown games (with a close match when there is one) and the valid
      names.
  """
  games = (games,) if isinstance(games, str) else tuple(games)
  unknown = [g for g in games if g not in MINIMAL_ACTIONS]
  if unknown:
    lower = {g.lower().replace("_", ""): g for g in ALL_GAMES}
    hints = [
      f"{g!r} (did you mean {lower[g.lower().replace('_', '')]!r}?)"
      if g.lower().replace("_", "") in lower
      else repr(g)
      for g in unknown
    ]
    raise ValueError(
      f"Unknown Atari game {', '.join(hints)}. Valid games (DQN Replay names): "
      f"{', '.join(ALL_GAMES)}."
    )
  return games


def num_actions(game: str) -> int:
  """Size of the game's minimal action set."""
  validate_games(game)
  return len(MINIMAL_ACTIONS[game])


def minimal_to_full(game: str) -> np.ndarray:
  """int32 [num_actions(game)]: full-ALE id of each minimal-set action index."""
  validate_games(game)
  return np.asarray(MINIMAL_ACTIONS[game], dtype=np.int32)


def full_to_minimal(game: str) -> np.ndarray:
  """int32 [18]: minimal-set index of each full-ALE action id, -1 where the game lacks it.

  MGDT maps actions without a minimal counterpart to NOOP (index 0); callers that want that
  behaviour use `np.maximum(full_to_minimal(game), 0)`.
  """
  table = np.full(MAX_NUM_ACTIONS, -1, dtype=np.int32)
  table[minimal_to_full(game)] = np.arange(num_actions(game), dtype=np.int32)
  return table


def ale_rom_id(game: str) -> str:
  """ALE's snake_case ROM id of a DQN Replay game name, e.g. "MsPacman" -> "ms_pacman"."""
  validate_games(game)
  return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def human_normalized_score(game: str, score: float) -> float:
  """(score - random) / (human - random) with dqn_zoo's reference scores.

  Raises:
    ValueError: for an unknown game, or for Carnival/Pooyan, which have no human score.
  """
  validate_games(game)
  if game not in HUMAN_SCORES:
    raise ValueError(
      f"{game} has no official human reference score (dqn_zoo's table has none for "
      f"{' and '.join(GAMES_WITHOUT_HUMAN_SCORE)}); report its raw score instead."
    )
  random_score = RANDOM_SCORES[game]
  return (float(score) - random_score) / (HUMAN_SCORES[game] - random_score)
