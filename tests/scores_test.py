"""Tests for scaled_ql.report.scores: normalisation, aggregates and CIs vs rliable and by hand."""

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from scaled_ql.report import scores

# A fixed score matrix [num_runs=3, num_games=5] with a heavy tail, as Atari scores have.
_FIXED = np.array(
  [
    [0.1, 0.5, 1.2, 3.0, -0.1],
    [0.2, 0.4, 1.0, 8.0, 0.0],
    [0.0, 0.6, 1.5, 2.0, 0.05],
  ]
)


def test_normalize_known_values():
  # Breakout in dqn_zoo's atari_data.py: random 1.7, human 30.5.
  np.testing.assert_allclose(scores.normalize([1.7, 30.5, 16.1], 1.7, 30.5), [0.0, 1.0, 0.5])
  # Pong: random -20.7, human 14.6; a score of 21 is (21 + 20.7) / 35.3.
  np.testing.assert_allclose(scores.normalize(21.0, -20.7, 14.6), 41.7 / 35.3)
  with pytest.raises(ValueError, match="equals the random score"):
    scores.normalize(1.0, 2.0, 2.0)


def test_human_normalized_scores_use_game_table():
  games = pytest.importorskip("scaled_ql.games")
  out = scores.human_normalized_scores({"Breakout": [1.7, 30.5], "Pong": [14.6]})
  np.testing.assert_allclose(out["Breakout"], [0.0, 1.0])
  np.testing.assert_allclose(out["Pong"], [1.0])
  assert games.RANDOM_SCORES["Breakout"] == pytest.approx(1.7)
  assert games.HUMAN_SCORES["Breakout"] == pytest.approx(30.5)
  with pytest.raises(ValueError, match="No human/random reference"):
    scores.human_normalized_scores({"NotAGame": [1.0]})


def test_dqn_normalized_scores_take_reference_as_input():
  pytest.importorskip("scaled_ql.games")
  out = scores.dqn_normalized_scores({"Breakout": [1.7, 101.7]}, {"Breakout": 201.7})
  np.testing.assert_allclose(out["Breakout"], [0.0, 0.5])
  with pytest.raises(ValueError, match="No DQN reference"):
    scores.dqn_normalized_scores({"Pong": [0.0]}, {"Breakout": 1.0})


def test_aggregate_metrics_by_hand_and_against_rliable():
  m = np.arange(8, dtype=np.float64).reshape(2, 4)
  iqm, median, mean, gap = scores.aggregate_metrics(m)
  # Pooled over all 8 entries: drop 2 lowest and 2 highest -> mean(2, 3, 4, 5).
  assert iqm == pytest.approx(3.5)
  # Per-game means over runs are [2, 3, 4, 5].
  assert median == pytest.approx(3.5)
  assert mean == pytest.approx(3.5)
  # min(score, 1) -> [0, 1, 1, 1, 1, 1, 1, 1], mean 7/8.
  assert gap == pytest.approx(1 / 8)
  np.testing.assert_allclose(
    scores.aggregate_metrics(_FIXED),
    [
      metrics.aggregate_iqm(_FIXED),
      metrics.aggregate_median(_FIXED),
      metrics.aggregate_mean(_FIXED),
      metrics.aggregate_optimality_gap(_FIXED),
    ],
  )


def test_cis_equal_rliable_with_the_same_seed_and_are_reproducible():
  score_dict = {"a": _FIXED, "b": _FIXED * 0.5}
  ours = scores.aggregate_with_cis(score_dict, reps=500, seed=3)
  np.random.seed(3)
  points, cis = rly.get_interval_estimates(
    score_dict,
    lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x)]),
    reps=500,
  )
  # Same seed, same resamples: rliable's own call gives the same IQM and median intervals.
  for name in score_dict:
    assert ours[name]["iqm"].value == pytest.approx(points[name][0])
    assert ours[name]["median"].value == pytest.approx(points[name][1])
  # The first method's intervals come from the first 500 draws in both calls.
  assert ours["a"]["iqm"].ci_low == pytest.approx(cis["a"][0, 0])
  assert ours["a"]["iqm"].ci_high == pytest.approx(cis["a"][1, 0])
  assert ours["a"]["median"].ci_low == pytest.approx(cis["a"][0, 1])
  again = scores.aggregate_with_cis(score_dict, reps=500, seed=3)
  assert again == ours
  for est in ours["a"].values():
    assert est.ci_low <= est.value + 1e-9 and est.value <= est.ci_high + 1e-9
  # The global generator is left as it was.
  np.random.seed(11)
  expected = np.random.rand()
  np.random.seed(11)
  scores.aggregate_with_cis({"a": _FIXED}, reps=50)
  assert np.random.rand() == expected


def test_single_run_cis_collapse_unless_games_are_resampled():
  one_run = _FIXED[:1]
  est = scores.aggregate_with_cis({"a": one_run}, reps=200)["a"]["iqm"]
  assert est.ci_low == pytest.approx(est.value) and est.ci_high == pytest.approx(est.value)
  est = scores.aggregate_with_cis({"a": one_run}, reps=200, task_bootstrap=True)["a"]["iqm"]
  assert est.ci_high - est.ci_low > 0.01


def test_bad_matrices_are_rejected():
  with pytest.raises(ValueError, match="num_runs, num_games"):
    scores.aggregate_with_cis({"a": np.ones(3)})
  with pytest.raises(ValueError, match="NaN"):
    scores.aggregate_with_cis({"a": np.array([[np.nan, 1.0]])})
  with pytest.raises(ValueError, match="Run 1 has no score"):
    scores.score_matrix([{"A": 1.0, "B": 2.0}, {"A": 1.0}], ["A", "B"])
  np.testing.assert_array_equal(scores.score_matrix([{"A": 1, "B": 2}], ["B", "A"]), [[2, 1]])


def test_performance_profile_matches_definition():
  taus = np.array([-1.0, 0.5, 100.0])
  profiles, cis = scores.performance_profiles({"a": _FIXED}, taus, reps=100)
  expected = [np.mean(_FIXED > t) for t in taus]
  np.testing.assert_allclose(profiles["a"], expected)
  assert cis["a"].shape == (2, 3)


def test_power_law_recovers_exponent():
  n = np.array([1e6, 1e7, 3e7, 1e8])
  fit = scores.fit_power_law(n, 2.0 * n**0.25)
  assert fit.exponent == pytest.approx(0.25)
  assert fit.coefficient == pytest.approx(2.0)
  assert fit.r_squared == pytest.approx(1.0)
  with pytest.raises(ValueError, match="positive"):
    scores.fit_power_law([1.0, 2.0], [1.0, -1.0])
  with pytest.raises(ValueError, match="two distinct"):
    scores.fit_power_law([1.0, 1.0], [1.0, 2.0])
  # Two sizes: the line fits them exactly, so there is no r^2 to speak of.
  assert np.isnan(scores.fit_power_law([1.0, 2.0], [1.0, 3.0]).r_squared)


def test_power_law_exponent_interval_resamples_runs_within_sizes():
  n = [1e6, 1e7, 1e8]
  # One run per size: nothing to resample, the interval is the fit's exponent.
  one_run = [np.full((1, 5), 0.5 * (k / 1e6) ** 0.25) for k in n]
  low, high, num_fitted = scores.power_law_exponent_interval(n, one_run, reps=100)
  assert (low, high, num_fitted) == (pytest.approx(0.25), pytest.approx(0.25), 100)
  # Runs at 1, -1 and 1 at the smallest size: a resample that draws the -1 run twice or more
  # (7/27 of them) has an IQM < 0 there (the middle half of 12 entries, 8 of them -1); those are
  # left out and counted: about 296 of 400 are fitted.
  spread = [np.array([[1.0] * 4, [-1.0] * 4, [1.0] * 4]), np.ones((3, 4)), np.ones((3, 4)) * 2]
  low, high, num_fitted = scores.power_law_exponent_interval(n, spread, reps=400, seed=1)
  assert 260 < num_fitted < 330 and low < high
  assert scores.power_law_exponent_interval(n, [-np.ones((2, 2))] * 3, reps=10)[2] == 0
