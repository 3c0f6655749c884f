"""Normalised Atari scores and their aggregates, computed the way rliable computes them.

Conventions (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"):

- A score matrix is float [num_runs, num_games]: one row per independent run (training seed),
  one column per game, each entry a normalised score averaged over that run's evaluation episodes.
- IQM is the 25% trimmed mean over all run x game entries pooled together (not a mean of per-game
  IQMs); median and mean are taken over the per-game means across runs; the optimality gap is
  `1 - mean(min(score, 1))`.
- Confidence intervals are percentile stratified-bootstrap intervals (runs resampled within each
  game) from `rliable.library.get_interval_estimates`. rliable 1.2.0 draws its bootstrap indices from
  numpy's *global* generator (its `random_state` argument does not reach `update_indices`), so we
  seed that generator for the duration of the call and restore it afterwards: same seed, same CIs.
  With a single run per method the run-bootstrap interval collapses to the point estimate; pass
  `task_bootstrap=True` to also resample games.
"""

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics
from scipy import stats

METRICS = ("iqm", "median", "mean", "optimality_gap")


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A point estimate with its confidence interval."""

  value: float
  ci_low: float
  ci_high: float


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """`score = coefficient * num_params ** exponent`, fitted by least squares in log-log space."""

  coefficient: float
  exponent: float
  r_squared: float  # NaN below 3 points: a line through 2 points fits them exactly.
  num_points: int


# ---------------------------------------------------------------------------------------------
# Normalisation.
# ---------------------------------------------------------------------------------------------


def normalize(raw_score, low: float, high: float) -> np.ndarray:
  """`(raw - low) / (high - low)`: 0 at `low`, 1 at `high`.

  Args:
    raw_score: float or array of unclipped game returns.
    low: the score mapped to 0 (a random policy's score).
    high: the score mapped to 1 (human, or a DQN reference).

  Returns:
    float64 array of the same shape as `raw_score`.
  """
  if high == low:
    raise ValueError(f"Cannot normalise: reference score {high} equals the random score.")
  return (np.asarray(raw_score, np.float64) - low) / (high - low)


def human_normalized_scores(raw_scores: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
  """Human-normalised scores per game, from the human/random table in `scaled_ql.games`.

  Args:
    raw_scores: game name -> raw (unclipped) episode returns or per-run means.

  Returns:
    game name -> float64 array of human-normalised scores (1.0 = human, 0.0 = random).

  Raises:
    ValueError: a game has no human score, naming the games that do.
  """
  from scaled_ql import games  # Imported here: scores are usable without the game tables.

  missing = sorted(set(raw_scores) - set(games.HUMAN_SCORES))
  if missing:
    raise ValueError(
      f"No human/random reference score for {missing} in scaled_ql.games.HUMAN_SCORES; "
      "human-normalised aggregates cannot include them. Evaluate games from games.ALL_GAMES."
    )
  return {
    game: normalize(scores, games.RANDOM_SCORES[game], games.HUMAN_SCORES[game])
    for game, scores in raw_scores.items()
  }


def dqn_normalized_scores(
  raw_scores: Mapping[str, Sequence[float]],
  dqn_reference: Mapping[str, float],
) -> dict[str, np.ndarray]:
  """DQN-normalised scores, as in the fine-tuning results of MGDT and Scaled QL.

  Lee et al. 2022 (arXiv 2205.15241, Section 4.1) define the DQN-normalised score as the human
  normalisation with the human score replaced by "the best DQN scores seen in the training
  dataset", i.e. `(score - random) / (dqn_best - random)`. Those per-game DQN scores are not
  published as a table we could cite, so the reference is an input: compute it from the best
  episode return in the DQN Replay logs of the game you fine-tune on, and record where it came
  from next to the numbers (`python -m scaled_ql.report --dqn_reference=FILE`).

  Args:
    raw_scores: game name -> raw episode returns.
    dqn_reference: game name -> the DQN reference score of that game.

  Returns:
    game name -> float64 array of DQN-normalised scores (1.0 = the DQN reference).
  """
  from scaled_ql import games

  missing = sorted(set(raw_scores) - set(dqn_reference))
  if missing:
    raise ValueError(f"No DQN reference score given for {missing}.")
  return {
    game: normalize(scores, games.RANDOM_SCORES[game], dqn_reference[game])
    for game, scores in raw_scores.items()
  }


def score_matrix(
  per_run_scores: Sequence[Mapping[str, float]], game_names: Sequence[str]
) -> np.ndarray:
  """Stacks per-run {game: score} dictionaries into a [num_runs, num_games] matrix.

  Args:
    per_run_scores: one mapping per run, game -> normalised mean score of that run.
    game_names: the column order; every run must have every game.

  Returns:
    float64 [num_runs, num_games].
  """
  rows = []
  for i, run in enumerate(per_run_scores):
    missing = [g for g in game_names if g not in run]
    if missing:
      raise ValueError(f"Run {i} has no score for {missing}.")
    rows.append([float(run[g]) for g in game_names])
  return np.asarray(rows, np.float64).reshape(len(rows), len(game_names))


# ---------------------------------------------------------------------------------------------
# Aggregates with stratified-bootstrap confidence intervals.
# ---------------------------------------------------------------------------------------------


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
  """Point estimates of METRICS for one [num_runs, num_games] score matrix.

  Args:
    scores: float [num_runs, num_games].

  Returns:
    float64 [4]: IQM, median, mean, optimality gap (the order of METRICS).
  """
  return np.array(
    [
      metrics.aggregate_iqm(scores),
      metrics.aggregate_median(scores),
      metrics.aggregate_mean(scores),
      metrics.aggregate_optimality_gap(scores),
    ]
  )


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
  """Seeds numpy's global generator (the one rliable's bootstrap draws from), then restores it."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)


def _check_matrices(score_dict: Mapping[str, np.ndarray]) -> None:
  for name, scores in score_dict.items():
    if scores.ndim != 2 or scores.size == 0:
      raise ValueError(f"{name}: expected scores [num_runs, num_games], got {scores.shape}.")
    if not np.all(np.isfinite(scores)):
      raise ValueError(f"{name}: scores contain NaN or inf.")


def aggregate_with_cis(
  score_dict: Mapping[str, np.ndarray],
  *,
  reps: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
  task_bootstrap: bool = False,
) -> dict[str, dict[str, Estimate]]:
  """IQM, median, mean and optimality gap with stratified-bootstrap CIs, via rliable.

  Args:
    score_dict: method name -> float [num_runs, num_games] normalised scores.
    reps: bootstrap replications (rliable's default is 50,000; 2,000 is enough for 2 digits).
    confidence: coverage of the percentile intervals.
    seed: seeds the bootstrap; the same seed gives the same intervals.
    task_bootstrap: also resample games (rliable's `task_bootstrap`).

  Returns:
    method name -> metric name (METRICS) -> Estimate.
  """
  _check_matrices(score_dict)
  with _seeded_global_numpy(seed):
    points, intervals = rly.get_interval_estimates(
      {k: np.asarray(v, np.float64) for k, v in score_dict.items()},
      aggregate_metrics,
      reps=reps,
      confidence_interval_size=confidence,
      task_bootstrap=task_bootstrap,
    )
  return {
    name: {
      metric: Estimate(
        float(points[name][i]), float(intervals[name][0, i]), float(intervals[name][1, i])
      )
      for i, metric in enumerate(METRICS)
    }
    for name in score_dict
  }


def performance_profiles(
  score_dict: Mapping[str, np.ndarray],
  taus: np.ndarray,
  *,
  reps: int = 2000,
  seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Score distributions (fraction of run x game scores above tau) with bootstrap CIs.

  Args:
    score_dict: method name -> float [num_runs, num_games].
    taus: float [T] thresholds.
    reps: bootstrap replications.
    seed: seeds the bootstrap.

  Returns:
    (profiles, cis): method -> float [T]; method -> float [2, T] lower/upper bounds.
  """
  _check_matrices(score_dict)
  with _seeded_global_numpy(seed):
    return rly.create_performance_profile(dict(score_dict), np.asarray(taus), reps=reps)


# ---------------------------------------------------------------------------------------------
# Scaling.
# ---------------------------------------------------------------------------------------------


def fit_power_law(num_params: Sequence[float], scores: Sequence[float]) -> PowerLaw:
  """Fits `score = a * num_params ** b` by least squares on log(score) vs log(num_params).

  Only positive scores can be fitted in log space; the caller must leave out (and report)
  points with a score <= 0.

  Args:
    num_params: [P] model sizes (parameters or FLOPs), > 0.
    scores: [P] aggregate scores (e.g. IQM human-normalised), > 0.

  Returns:
    The fitted PowerLaw, with the r^2 of the log-log fit (NaN with fewer than 3 sizes).
  """
  x = np.asarray(num_params, np.float64)
  y = np.asarray(scores, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"Expected two [P] arrays, got {x.shape} and {y.shape}.")
  if np.any(x <= 0) or np.any(y <= 0):
    raise ValueError("A power law is fitted in log space: sizes and scores must be positive.")
  if len(np.unique(x)) < 2:
    raise ValueError(f"Need at least two distinct model sizes to fit a power law, got {x}.")
  log_x, log_y = np.log(x), np.log(y)
  exponent, intercept = np.polyfit(log_x, log_y, 1)
  r_squared = np.nan  # A line through 2 points fits them exactly: no r^2 below 3.
  if len(x) >= 3:
    residual = log_y - (intercept + exponent * log_x)
    total = np.sum((log_y - log_y.mean()) ** 2)
    r_squared = 1.0 - np.sum(residual**2) / total if total > 0 else 1.0
  return PowerLaw(float(np.exp(intercept)), float(exponent), float(r_squared), int(len(x)))


def power_law_exponent_interval(
  num_params: Sequence[float],
  matrices: Sequence[np.ndarray],
  *,
  reps: int = 2000,
  confidence: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, int]:
  """A percentile bootstrap interval of the fitted exponent: runs resampled within each size,
  the IQM of each size recomputed and the power law refitted.

  Args:
    num_params: [P] model sizes, > 0.
    matrices: [P] score matrices, float [num_runs_p, num_games] (the runs of each size).
    reps: bootstrap resamples.
    confidence: coverage of the interval.
    seed: seeds the resampling.

  Returns:
    (low, high, num_fitted): the interval over the `num_fitted` resamples in which every size's
    IQM stayed > 0 (a power law is fitted in log space); NaNs when there were none.
  """
  rng = np.random.default_rng(seed)
  iqms = np.stack(
    [
      stats.trim_mean(m[rng.integers(0, len(m), (reps, len(m)))].reshape(reps, -1), 0.25, axis=1)
      for m in matrices
    ]
  )  # [P, reps]: rliable's IQM (pooled over runs x games) of each resample.
  fitted = np.all(iqms > 0, axis=0)
  if not fitted.any():
    return np.nan, np.nan, 0
  log_x = np.log(np.asarray(num_params, np.float64))[:, None] - np.mean(np.log(num_params))
  log_y = np.log(iqms[:, fitted])
  exponents = np.sum(log_x * (log_y - log_y.mean(axis=0)), axis=0) / np.sum(log_x**2)
  tail = 50 * (1 - confidence)
  low, high = np.percentile(exponents, [tail, 100 - tail])
  return float(low), float(high), int(fitted.sum())
