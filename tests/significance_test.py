"""Tests for scaled_ql.report.significance: the tests against scipy, Holm by hand, the data's
columns, and the procedure's false-positive rate and power on simulated runs.

The simulations call `compare_columns`, the function whose verdicts `report.compare` prints.
Their numbers are in docs/verdicts.md (run with `-s` to see them).
"""

import numpy as np
import pytest
from rliable import metrics
from scipy import stats

from scaled_ql import games
from scaled_ql.report import significance as sig

_GAMES = ("BeamRider", "Breakout", "CrazyClimber", "Qbert")  # The embedded default's games.


def _run(returns_by_game, *keys):
  return sig.Run({g: np.asarray(x, np.float64) for g, x in returns_by_game.items()},
                 frozenset(keys))  # fmt: skip


def test_holm_by_hand():
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; then the running max.
  np.testing.assert_allclose(sig.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(sig.holm([0.5, 0.9]), [1.0, 1.0])


def test_tests_equal_scipys():
  # Carnival has no human score: no IQM row, so each pair is a family of one (p_Holm = p).
  a = [[1.0, 2.0], [4.0, 4.0], [3.0, 5.0]]
  b = [[0.0, 1.0], [1.0, 1.0], [3.0, 0.0], [2.0, 2.0]]
  columns = {
    "a": [_run({"Carnival": x}, ("seed", k)) for k, x in enumerate(a)],
    "b": [_run({"Carnival": x}, ("seed", k)) for k, x in enumerate(b)],
    "c": [_run({"Carnival": x}) for x in b],  # Not paired with a: Welch's t.
  }
  table = sig.compare_columns(columns, confirmatory=[("a", "b")])
  by_pair = {(c.a, c.b): c for c in table.comparisons}
  assert table.rows == ["Carnival"]
  means_a, means_b = np.mean(a, axis=1), np.mean(b, axis=1)
  paired = by_pair["a", "b"]
  assert paired.design == "paired, 3 seeds" and paired.family == "confirmatory"
  assert paired.p_value == pytest.approx(stats.ttest_rel(means_a, means_b[:3]).pvalue)
  assert paired.p_holm == paired.p_value
  assert paired.difference == pytest.approx(np.mean(means_a - means_b[:3]))
  welch = by_pair["a", "c"]
  assert welch.design == "3 vs 4 runs" and welch.family == "exploratory"
  assert welch.p_value == pytest.approx(stats.ttest_ind(means_a, means_b, equal_var=False).pvalue)
  # The exploratory family holds a vs c and b vs c (paired by nothing, 4 vs 4 runs).
  np.testing.assert_allclose(
    [by_pair["a", "c"].p_holm, by_pair["b", "c"].p_holm],
    sig.holm([by_pair["a", "c"].p_value, by_pair["b", "c"].p_value]),
  )
  # The cell: mean of the runs' means with a t interval over runs.
  cell = table.cells["a", "Carnival"]
  half = stats.t.ppf(0.975, 2) * stats.sem(means_a)
  mean = np.mean(means_a)  # (1.5 + 4 + 4) / 3
  assert (cell.value, cell.low, cell.high) == pytest.approx((mean, mean - half, mean + half))
  assert cell.basis == "3 runs × 2"


def test_margins_equal_scipys_welch_on_the_seeds_differences():
  """A declared pair of margins, (a - b) vs (c - d): each margin per seed where its columns are
  paired, the two margins compared by Welch's t (scipy's on the per-seed differences); unpaired
  columns contribute their own variances (Welch-Satterthwaite by hand)."""
  a, b = [5.0, 7.0, 6.0], [1.0, 2.0, 2.5]  # Margins 4, 5, 3.5.
  c, d = [3.0, 2.0, 4.0, 3.5], [2.0, 2.0, 1.0, 3.0]  # Margins 1, 0, 3, 0.5.

  def column(values, paired=True):
    return [_run({"Carnival": [x]}, *([("seed", k)] if paired else [])) for k, x in
            enumerate(values)]  # fmt: skip

  columns = {"a": column(a), "b": column(b), "c": column(c), "d": column(d)}
  table = sig.compare_columns(columns, confirmatory=[(("a", "b"), ("c", "d"))])
  (margins,) = [c for c in table.comparisons if c.a == "a-b"]
  assert margins.b == "c-d" and margins.family == "confirmatory"
  assert margins.design == "margins: paired, 3 seeds; paired, 4 seeds"
  first, second = np.subtract(a, b), np.subtract(c, d)
  assert margins.difference == pytest.approx(first.mean() - second.mean())
  assert margins.p_value == pytest.approx(stats.ttest_ind(first, second, equal_var=False).pvalue)
  # Unpaired columns: four independent means.
  columns["c"], columns["d"] = column(c, paired=False), column(d, paired=False)
  table = sig.compare_columns(columns, confirmatory=[(("a", "b"), ("c", "d"))])
  (margins,) = [c for c in table.comparisons if c.a == "a-b"]
  assert margins.design == "margins: paired, 3 seeds; 4 vs 4 runs"
  parts = [(np.var(first, ddof=1) / 3, 2), (np.var(c, ddof=1) / 4, 3), (np.var(d, ddof=1) / 4, 3)]
  variance = sum(v for v, _ in parts)
  df = variance**2 / sum(v**2 / k for v, k in parts)
  t = (first.mean() - (np.mean(c) - np.mean(d))) / np.sqrt(variance)
  assert margins.p_value == pytest.approx(2 * stats.t.sf(abs(t), df))
  with pytest.raises(ValueError, match="four distinct methods"):
    sig.compare_columns(columns, confirmatory=[(("a", "b"), ("a", "d"))])


def test_one_run_gets_no_verdict_and_an_interval_over_its_episodes():
  columns = {
    "scaled_ql": [_run({"Breakout": [1.7, 30.5]}, ("seed", 0))],
    "bc": [
      _run({"Breakout": [1.7, 1.8]}, ("seed", 0)),
      _run({"Breakout": [2.0, 1.7]}, ("seed", 1)),
    ],
  }
  data = {"Breakout": {0: np.array([2.0, 4.0]), 1: np.array([10.0, 12.0])}}
  table = sig.compare_columns(columns, data, key="k")
  # Two episodes 1.7 and 30.5 resample to means 1.7, 16.1 or 30.5.
  cell = table.cells["scaled_ql", "Breakout"]
  assert (cell.value, cell.low, cell.high, cell.basis) == (16.1, 1.7, 30.5, "1 run, 2 episodes")
  assert {(a, b) for a, b, _, why in table.untested if why == "scaled_ql has 1 run"} == {
    ("scaled_ql", sig.DATA),
    ("scaled_ql", sig.BEST),
    ("scaled_ql", "bc"),
  }
  assert {(c.a, c.b) for c in table.comparisons} == {("bc", sig.DATA), ("bc", sig.BEST)}
  assert all(c.design == "2 runs vs the data" for c in table.comparisons)
  # The same key gives the same table.
  assert sig.compare_columns(columns, data, key="k") == table


def test_data_average_is_per_checkpoint_and_best_is_chosen_inside_the_bootstrap():
  # Checkpoint 0: one long episode of 3; checkpoint 1: four short ones of 1. Pooled, the average
  # would be 7/5 = 1.4; per checkpoint it is (3 + 1) / 2 = 2.
  data = {"Breakout": {0: np.array([3.0]), 1: np.array([1.0, 1.0, 1.0, 1.0])}}
  columns = {"bc": [_run({"Breakout": [1.0]}), _run({"Breakout": [2.0]})]}
  table = sig.compare_columns(columns, data)
  average, best = table.cells[sig.DATA, "Breakout"], table.cells[sig.BEST, "Breakout"]
  assert (average.value, average.basis) == (2.0, "5 episodes, 2 checkpoints")
  assert (best.value, best.basis, table.best_checkpoint) == (3.0, "1 episodes", {"Breakout": 0})
  # Two checkpoints that tie at 5: resampled, the first's mean is 0, 5 or 10 and the second's 4,
  # 5 or 6. The best is chosen in each resample: its means never fall below 4 (1/16 of them at
  # 4), where the first checkpoint chosen once would give an interval down to 0.
  tie = {"Breakout": {0: np.array([0.0, 10.0]), 1: np.array([4.0, 6.0])}}
  best = sig.compare_columns(columns, tie).cells[sig.BEST, "Breakout"]
  assert (best.value, best.low, best.high) == (5.0, 4.0, 10.0)
  # One checkpoint: its best is its average, neither shown nor tested twice.
  table = sig.compare_columns(columns, {"Breakout": {0: np.array([3.0, 4.0])}})
  assert [(c.b, c.row) for c in table.comparisons] == [(sig.DATA, "Breakout")]
  assert (sig.BEST, "Breakout") not in table.cells and table.best_checkpoint == {}


def test_iqm_row_is_rliables_iqm_per_run():
  rng = np.random.default_rng(1)
  returns = [{g: rng.uniform(0, 2 * games.HUMAN_SCORES[g], 3) for g in _GAMES} for _ in range(3)]
  table = sig.compare_columns({"bc": [_run(r) for r in returns]})
  hns = np.array([[games.human_normalized_score(g, r[g].mean()) for g in _GAMES] for r in returns])
  per_run = [metrics.aggregate_iqm(row[None]) for row in hns]
  assert table.rows == [*_GAMES, sig.IQM_ROW]
  assert table.cells["bc", sig.IQM_ROW].value == pytest.approx(np.mean(per_run))
  assert table.cells["bc", sig.IQM_ROW].basis == "3 runs × 4 games"


def test_pairs_need_two_seeds_in_common():
  one = {"Carnival": [1.0, 2.0]}
  columns = {
    "a": [_run(one, ("seed", 0)), _run(one, ("seed", 1))],
    "b": [_run(one, ("seed", 0)), _run(one, ("seed", 2))],
  }
  table = sig.compare_columns(columns)
  assert table.untested == [("a", "b", "Carnival", "1 seed in common")]
  assert table.comparisons == []


# ---------------------------------------------------------------------------------------------
# The procedure on simulated runs.
# ---------------------------------------------------------------------------------------------

_EPISODES = 8
_DATA_EPISODES = 50  # Per checkpoint, 3 checkpoints.


def _simulate(rng, num_methods, num_runs, seed_spread, skewed, paired, effect=0.0):
  """Runs of `num_methods` columns on 4 games and the data (3 checkpoints), all alike but for
  `effect` added to scaled_ql on every game.

  Args:
    seed_spread: the standard deviation of a run's seed effect over that of an episode.
    skewed: episodes from an exponential distribution (a long right tail) instead of a normal.
    paired: the runs of one seed share a seed effect (correlation 0.5) and their pair keys.
    effect: in units of the standard deviation of a run's mean over seeds.
  """
  names = ["scaled_ql", "bc"] + [f"method_{k}" for k in range(num_methods - 2)]
  columns = {name: [] for name in names}
  shared = rng.standard_normal((num_runs, len(_GAMES)))

  def episodes(size):
    return rng.exponential(1.0, size) - 1.0 if skewed else rng.standard_normal(size)

  for name in names:
    own = rng.standard_normal((num_runs, len(_GAMES)))
    seed_effect = np.sqrt(0.5) * (shared + own) if paired else own
    run_sd = np.sqrt(seed_spread**2 + 1 / _EPISODES)
    shift = effect * run_sd if name == "scaled_ql" else 0.0
    for r in range(num_runs):
      scores = shift + seed_spread * seed_effect[r, :, None] + episodes((len(_GAMES), _EPISODES))
      columns[name].append(_run(_raw(scores), *([("seed", r)] if paired else [])))
  data = [_raw(episodes((len(_GAMES), _DATA_EPISODES))) for _ in range(3)]
  return columns, {g: {k: data[k][g] for k in range(3)} for g in _GAMES}


def _raw(scores):
  """[4, E] standard scores as each game's returns: episode SD 10% of its human-random gap."""
  gaps = {g: games.HUMAN_SCORES[g] - games.RANDOM_SCORES[g] for g in _GAMES}
  return {
    g: games.RANDOM_SCORES[g] + gaps[g] * (0.3 + 0.1 * x)
    for g, x in zip(_GAMES, scores, strict=True)
  }


_NULL_CASES = [  # (methods, runs, seed spread, skewed, paired): 5 to 8 columns with the data.
  (3, 3, 0.0, False, True),
  (6, 3, 1.0, True, True),
  (4, 2, 1.0, False, False),
  (6, 2, 3.0, True, False),
  (3, 3, 3.0, False, False),
]
_NULL_REPS = 240


def test_false_verdicts_on_null_runs_stay_within_the_level():
  rng = np.random.default_rng(0)
  false = np.zeros((len(_NULL_CASES), _NULL_REPS, 2), bool)  # [case, rep, family]
  for i, case in enumerate(_NULL_CASES):
    for rep in range(_NULL_REPS):
      table = sig.compare_columns(*_simulate(rng, *case), key=str(rep), reps=200)
      for f, family in enumerate(("confirmatory", "exploratory")):
        false[i, rep, f] = any(c.verdict for c in table.comparisons if c.family == family)
  rates = false.mean(axis=1)  # [case, family]
  pooled = false.reshape(-1, 2).mean(axis=0)
  either = false.any(axis=2).mean()
  print(f"\nnull runs: family-wise false-positive rate per case (confirmatory, exploratory) "
        f"{rates.round(3).tolist()}; pooled {pooled.round(4).tolist()} over "
        f"{false.shape[0] * false.shape[1]} tables; either family {either:.4f}")  # fmt: skip
  error = np.sqrt(sig.ALPHA * (1 - sig.ALPHA) / false[..., 0].size)
  assert np.all(pooled <= sig.ALPHA + 2 * error)
  assert np.all(rates <= sig.ALPHA + 3 * np.sqrt(sig.ALPHA * (1 - sig.ALPHA) / _NULL_REPS))


@pytest.mark.parametrize(
  "effect, num_runs, low, high",
  [(6.0, 3, 0.8, 1.0), (4.0, 3, 0.2, 0.7), (6.0, 2, 0.0, 0.1), (2.0, 5, 0.4, 0.9)],
)
def test_power_a_difference_is_found_with_three_runs_not_two(effect, num_runs, low, high):
  # Scaled QL above BC and the data by `effect` standard deviations of a run's mean on every
  # game, paired by seed as the embedded default's runs are: 6 are found in most of the
  # confirmatory comparisons with 3 runs, and rarely with 2 (a t-test on 1 degree of freedom).
  rng = np.random.default_rng(1)
  found = []
  for rep in range(150):
    columns, data = _simulate(rng, 2, num_runs, 1.0, False, True, effect=effect)
    table = sig.compare_columns(columns, data, key=str(rep), reps=200)
    confirmatory = [c for c in table.comparisons if c.family == "confirmatory"]
    found += [c.verdict == 1 for c in confirmatory]
    assert not any(c.verdict == -1 for c in confirmatory)  # Never the wrong way round.
  power = np.mean(found)
  print(f"\n{effect} run SDs, {num_runs} runs: {power:.3f} of the confirmatory comparisons found")
  assert low <= power <= high
