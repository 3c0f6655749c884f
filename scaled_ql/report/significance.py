"""Verdicts for a comparison table: which differences the runs support, corrected for how many
comparisons the table makes. `compare` prints what `compare_columns` returns; docs/verdicts.md
gives the procedure's simulated false-positive rate and power.

- The unit is the training run (its seed). Per game a run is its mean episode return; on the
  aggregate row it is its IQM over games of human-normalised means (rliable's trimmed mean,
  taken per run so that each seed gives one number to test). A column needs 2 or more runs
  (MIN_RUNS) on a row for a verdict there: one run says nothing of another seed, so its cell
  shows an interval over its episodes only, and it gets no verdict.
- Tests, two-sided, on the per-run values: a paired t-test over seeds where the runs of two
  columns are paired (`Run.pair_keys`: the same seed in the same directory of runs, which share
  batch order and evaluation seeds; a Q-guided run and its proposal or critic); Welch's t-test
  otherwise; and against the data, a t-test whose variance adds the data's (a bootstrap over
  its episodes within each checkpoint) to the runs', on the runs' degrees of freedom (R - 1,
  conservative). Exact permutation tests cannot be used at these sizes: 3 runs against 3 have 20
  arrangements (smallest two-sided p 0.1) and 3 pairs 8 sign flips (0.25), above every
  corrected threshold; a bootstrap over 3 runs understates their spread. With 2 runs the t-tests
  keep their level (1 or 2 degrees of freedom) at almost no power; the simulation checks both.
- Corrections: Holm's step-down within each family, which controls the family-wise error rate
  (the chance of one or more false verdicts) under any dependence between the tests, and the
  tests here are dependent (they share columns). Benjamini-Hochberg would bound only the
  expected share of false verdicts among those printed, and needs positive dependence; a
  verdict is quoted as a finding on its own, so the stronger guarantee is the one wanted.
- Families: the confirmatory comparisons, declared before the results (by default Scaled QL vs
  BC and vs the data's best checkpoint, on every game and the aggregate), and the exploratory
  ones (every other pair), each corrected within itself at ALPHA. A confirmatory comparison
  may also be of two margins (a method's over another in two settings, e.g. Scaled QL's over
  BC on poor and on all data): each margin estimated over its seeds as above, the two taken as
  independent, Welch-Satterthwaite degrees of freedom.
- The data: its average is the mean of its checkpoints' means (a checkpoint of many short
  episodes weighs no more than another); its best checkpoint is chosen inside every bootstrap
  resample, and its value is bias-corrected for that selection in the tests.
"""

import dataclasses
import itertools
import zlib
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from scipy import stats

from scaled_ql import games
from scaled_ql.report import scores

ALPHA = 0.05  # The family-wise error rate of each family.
CONFIDENCE = 0.95  # The cells' intervals.
MIN_RUNS = 2  # Runs (or pairs) a column needs on a row for a verdict there.
BOOTSTRAP_REPS = 2000  # The data's episodes, and one run's episodes in its cells.
DATA = "the data's average"
BEST = "the data's best checkpoint"
IQM_ROW = "IQM (human-normalised)"
CONFIRMATORY = (("scaled_ql", "bc"), ("scaled_ql", BEST))  # The embedded default's claims.


@dataclasses.dataclass(frozen=True)
class Run:
  """One evaluated run of a column.

  Attributes:
    returns: game -> float [E] its latest evaluation's episode returns.
    pair_keys: a run of another column that shares one of these keys is this run's partner.
  """

  returns: Mapping[str, np.ndarray]
  pair_keys: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Cell:
  """A column's value on one row with its 95% interval and what the interval rests on."""

  value: float
  low: float
  high: float
  basis: str  # "3 runs × 8", "1 run, 8 episodes", "250 episodes, 3 checkpoints", ...


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One tested difference `a - b` on one row, and its verdict after Holm's correction."""

  a: str
  b: str
  row: str
  family: str  # "confirmatory" or "exploratory"
  design: str  # "paired, 3 seeds", "3 vs 2 runs" or "3 runs vs the data"
  difference: float
  p_value: float
  p_holm: float  # Holm-adjusted within the family: a verdict where p_holm <= ALPHA.
  verdict: int  # +1: a above b; -1: below; 0: no difference detected.


@dataclasses.dataclass(frozen=True)
class Table:
  """Everything `compare` prints: cells by (column, row), the comparisons and the untested."""

  rows: list[str]
  cells: dict[tuple[str, str], Cell]
  comparisons: list[Comparison]
  untested: list[tuple[str, str, str, str]]  # (a, b, row, why: "a has 1 run", ...)
  best_checkpoint: dict[str, int]  # game -> the checkpoint with the highest observed mean


@dataclasses.dataclass(frozen=True)
class _Sample:
  """A column on one row: per-run values (a method) or bootstrap draws (the data)."""

  value: float
  runs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # [R]; [0]: data
  keys: tuple[frozenset, ...] = ()  # [R]
  draws: np.ndarray | None = None  # [reps]
  center: float = 0.0  # The data's value for tests (the best checkpoint's, bias-corrected).


# ---------------------------------------------------------------------------------------------
# Tests and the correction.
# ---------------------------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjusted p-values: reject at level alpha where adjusted <= alpha.

  Args:
    p_values: [m] the family's p-values.

  Returns:
    float [m]: `max_{j <= i} min(1, (m - j + 1) p_(j))` in the original order.
  """
  p = np.asarray(p_values, np.float64)
  order = np.argsort(p)
  stepped = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
  adjusted = np.empty_like(p)
  adjusted[order] = np.maximum.accumulate(stepped)
  return adjusted


def _pairs(a: _Sample, b: _Sample) -> list[tuple[int, int]]:
  """Indices (i, j) of partnered runs; each run has at most one partner (the first found)."""
  pairs, taken = [], set()
  for i, keys in enumerate(a.keys):
    j = next((j for j, k in enumerate(b.keys) if j not in taken and keys & k), None)
    if j is not None:
      taken.add(j)
      pairs.append((i, j))
  return pairs


def _welch(components: Sequence[tuple[float, float]]) -> tuple[float, float]:
  """The standard error of a sum of independent estimates `[(variance, degrees of freedom)]`
  and its Welch-Satterthwaite degrees of freedom (unlimited when none has any spread)."""
  variance = sum(v for v, _ in components)
  denominator = sum(v**2 / df for v, df in components)
  return float(np.sqrt(variance)), (variance**2 / denominator if denominator > 0 else np.inf)


def _margin(a: _Sample, b: _Sample) -> tuple[float, list[tuple[float, float]], str] | str:
  """Method a's margin over method b: (a - b, the variance components of its estimate, the
  design), or why there is no test. Both columns have MIN_RUNS or more runs; a paired
  estimate (over seeds) needs as many pairs, an unpaired one takes each column's variance."""
  pairs = _pairs(a, b)
  if 0 < len(pairs) < MIN_RUNS:
    return f"{len(pairs)} seed in common"
  if pairs:  # Over seeds: one difference per pair.
    d = np.array([a.runs[i] - b.runs[j] for i, j in pairs])
    return d.mean(), [(np.var(d, ddof=1) / len(d), len(d) - 1)], f"paired, {len(d)} seeds"
  components = [(np.var(x.runs, ddof=1) / len(x.runs), len(x.runs) - 1) for x in (a, b)]
  return a.value - b.value, components, f"{len(a.runs)} vs {len(b.runs)} runs"


def _difference(a: _Sample, b: _Sample) -> tuple[float, float, float, str] | str:
  """(difference a - b, its standard error, degrees of freedom, design), or why no test.

  Both columns have MIN_RUNS or more runs: a paired t-test over seeds where they are paired,
  Welch's otherwise, or against the data."""
  if not a.runs.size:
    raise ValueError("the first of two compared columns must be a method's runs")
  n_a = len(a.runs)
  if not b.runs.size:
    # Against the data: its variance (from the bootstrap) is as good as known, but Welch's
    # degrees of freedom would then overstate the evidence when the runs' spread happens to be
    # small (8% false positives at 5% in the null simulation); n_a - 1, as if all of the
    # variance were the runs', is conservative whatever the share.
    var_a, var_b = np.var(a.runs, ddof=1) / n_a, np.var(b.draws, ddof=1)
    return a.value - b.center, np.sqrt(var_a + var_b), n_a - 1, f"{n_a} runs vs the data"
  found = _margin(a, b)
  if isinstance(found, str):
    return found
  value, components, design = found
  return value, *_welch(components), design


def _margins_difference(a, b, c, d) -> tuple[float, float, float, str] | str:
  """(the margin a - b less the margin c - d, its standard error, degrees of freedom, design),
  or why no test. The two margins are estimated from disjoint columns and taken as
  independent: where their runs are positively correlated (the same seeds' initial
  parameters), the test is conservative."""
  margins = [_margin(a, b), _margin(c, d)]
  for found in margins:
    if isinstance(found, str):
      return found
  (first, first_parts, first_design), (second, second_parts, second_design) = margins
  se, df = _welch(first_parts + second_parts)
  return first - second, se, df, f"margins: {first_design}; {second_design}"


# ---------------------------------------------------------------------------------------------
# Per-row values: runs, and the data with bootstrap draws.
# ---------------------------------------------------------------------------------------------


def _rng(key: str) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32(key.encode()))


def _mean_draws(x: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
  """[reps] means of `x` [E] resampled with replacement."""
  return x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)


def _sem(x: np.ndarray) -> float:
  """The standard error of the mean of `x` [n] (sample standard deviation, ddof=1)."""
  return float(np.std(x, ddof=1) / np.sqrt(len(x)))


def _iqm(hns: np.ndarray) -> np.ndarray:
  """IQM over the last axis, e.g. [R, G] -> [R]: rliable's `aggregate_iqm` (scipy's 25% trimmed
  mean) of each row, written out because scipy's wrapper costs more than the null simulation."""
  cut = int(0.25 * hns.shape[-1])
  return np.sort(hns, axis=-1)[..., cut : hns.shape[-1] - cut].mean(axis=-1)


def _hns(by_game: Mapping[str, np.ndarray], iqm_games: Sequence[str]) -> np.ndarray:
  """[..., G] human-normalised values of `by_game` (game -> [...]) for `iqm_games`."""
  normalised = scores.human_normalized_scores({g: by_game[g] for g in iqm_games})
  return np.stack([normalised[g] for g in iqm_games], axis=-1)


def _percentiles(draws: np.ndarray) -> tuple[float, float]:
  tail = 50 * (1 - CONFIDENCE)
  low, high = np.percentile(draws, [tail, 100 - tail])
  return float(low), float(high)


def _runs_row(runs, row, iqm_games, rng, reps) -> tuple[_Sample, Cell] | None:
  """A method's per-run values on `row` and its cell; None when no run has the row."""
  runs = [r for r in runs if row == IQM_ROW or row in r.returns]
  if not runs or (row == IQM_ROW and not iqm_games):
    return None
  if row == IQM_ROW:
    means = {g: np.array([r.returns[g].mean() for r in runs]) for g in iqm_games}
    values, basis = _iqm(_hns(means, iqm_games)), f" × {len(iqm_games)} games"
  else:
    values = np.array([r.returns[row].mean() for r in runs])
    counts = [len(r.returns[row]) for r in runs]
    basis = f" × {counts[0]}" if len(set(counts)) == 1 else f", {sum(counts)} episodes"
  sample = _Sample(float(values.mean()), runs=values, keys=tuple(r.pair_keys for r in runs))
  if len(runs) >= MIN_RUNS:  # The interval over seeds that the tests use.
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(runs) - 1) * _sem(values)
    low, high = sample.value - half, sample.value + half
    return sample, Cell(sample.value, low, high, f"{len(runs)} runs{basis}")
  # One run: an interval over its episodes only.
  (run,) = runs
  if row == IQM_ROW:
    draws = _iqm(_hns({g: _mean_draws(run.returns[g], rng, reps) for g in iqm_games}, iqm_games))
  else:
    draws = _mean_draws(run.returns[row], rng, reps)
    basis = f", {len(run.returns[row])} episodes"
  return sample, Cell(sample.value, *_percentiles(draws), f"1 run{basis}")


def _data_rows(data, iqm_games, key, reps) -> tuple[dict, dict, dict]:
  """The data's average per game, its best checkpoint where it has several, and their IQMs
  where they cover every game of the aggregate.

  Args:
    data: game -> {checkpoint suffix: float [E_k] episode returns}.

  Returns:
    ({(DATA or BEST, row): _Sample}, {(DATA or BEST, row): Cell}, {game: best suffix}).
  """
  points, draws, cells, best_suffix = {DATA: {}, BEST: {}}, {DATA: {}, BEST: {}}, {}, {}
  for game, by_suffix in data.items():
    suffixes = sorted(by_suffix)
    means = np.array([by_suffix[k].mean() for k in suffixes])
    rng = _rng(f"{key}/data/{game}")
    resampled = np.stack([_mean_draws(by_suffix[k], rng, reps) for k in suffixes])  # [K, reps]
    points[DATA][game], draws[DATA][game] = means.mean(), resampled.mean(axis=0)
    cells[DATA, game] = Cell(means.mean(), *_percentiles(draws[DATA][game]),
                             f"{sum(len(x) for x in by_suffix.values())} episodes, "
                             f"{len(suffixes)} checkpoints")  # fmt: skip
    if len(suffixes) > 1:  # The best is chosen inside each resample: which one varies.
      points[BEST][game], draws[BEST][game] = means.max(), resampled.max(axis=0)
      best_suffix[game] = suffixes[int(np.argmax(means))]
      cells[BEST, game] = Cell(means.max(), *_percentiles(draws[BEST][game]),
                               f"{len(by_suffix[best_suffix[game]])} episodes")  # fmt: skip
  samples = {}
  for name in (DATA, BEST):
    if iqm_games and all(g in points[name] for g in iqm_games):
      points[name][IQM_ROW] = float(_iqm(_hns(points[name], iqm_games)))
      draws[name][IQM_ROW] = _iqm(_hns(draws[name], iqm_games))
      cells[name, IQM_ROW] = Cell(points[name][IQM_ROW], *_percentiles(draws[name][IQM_ROW]),
                                  f"{len(iqm_games)} games")  # fmt: skip
    for row, point in points[name].items():
      # The max over checkpoints of noisy means is biased upward (most when they tie): the
      # tests take it less the bias the bootstrap estimates. The average is unbiased.
      center = 2 * point - draws[name][row].mean() if name == BEST else point
      samples[name, row] = _Sample(float(point), draws=draws[name][row], center=float(center))
  return samples, cells, best_suffix


# ---------------------------------------------------------------------------------------------
# The table's comparisons.
# ---------------------------------------------------------------------------------------------


def compare_columns(
  columns: Mapping[str, Sequence[Run]],
  data: Mapping[str, Mapping[int, np.ndarray]] | None = None,
  confirmatory: Collection[tuple] = CONFIRMATORY,
  *,
  key: str = "",
  reps: int = BOOTSTRAP_REPS,
) -> Table:
  """The cells and corrected verdicts of a table of methods (columns of runs) and their data.

  Args:
    columns: method name -> its runs (its seeds), in the table's order.
    data: game -> {checkpoint suffix: float [E_k]} the data's logged episode returns, or None.
    confirmatory: the declared pairs (a, b) of column names (DATA and BEST name the data),
      and pairs of margins ((a, b), (c, d)): the margin of method a over method b against
      that of c over d (e.g. Scaled QL's over BC on two datasets), tested as a - b - (c - d)
      and printed as `a-b vs c-d`.
    key: seeds the bootstrap draws: the same key gives the same table.
    reps: bootstrap resamples of the data's episodes (and of a single run's).

  Returns:
    The Table: each comparison's p-value Holm-adjusted within its family.
  """
  game_names = sorted({g for runs in columns.values() for r in runs for g in r.returns})
  # The aggregate: the games with a human score that every run evaluated.
  iqm_games = [
    g for g in game_names
    if g in games.HUMAN_SCORES and all(g in r.returns for runs in columns.values() for r in runs)
  ]  # fmt: skip
  if len(iqm_games) < 2:  # The IQM of one game is that game's score: no row of its own.
    iqm_games = []
  rows = game_names + ([IQM_ROW] if iqm_games else [])
  samples, cells, best_suffix = _data_rows(data or {}, iqm_games, key, reps)
  for name, runs in columns.items():
    for row in rows:
      found = _runs_row(runs, row, iqm_games, _rng(f"{key}/{name}/{row}"), reps)
      if found:
        samples[name, row], cells[name, row] = found
  references = [n for n in (DATA, BEST) if any(k[0] == n for k in samples)]
  pairs = [(a, b) for a in columns for b in references] + list(itertools.combinations(columns, 2))
  margins = [pair for pair in confirmatory if not isinstance(pair[0], str)]
  declared = {frozenset(pair) for pair in confirmatory if isinstance(pair[0], str)}
  for (a, b), (c, d) in margins:
    if len({a, b, c, d}) < 4 or not {a, b, c, d} <= set(columns):
      raise ValueError(f"the declared margins {a}-{b} vs {c}-{d} need four distinct methods' "
                       f"columns; the columns are {', '.join(columns)}")  # fmt: skip
  tested, untested = [], []
  for names in pairs + margins:
    is_margin = not isinstance(names[0], str)
    a, b = (f"{m[0]}-{m[1]}" for m in names) if is_margin else names
    family = "confirmatory" if is_margin or frozenset(names) in declared else "exploratory"
    for row in rows:
      members = [n for m in names for n in m] if is_margin else names
      if all((n, row) in samples for n in members):
        few = [n for n in members if 0 < len(samples[n, row].runs) < MIN_RUNS]
        if few:
          n = len(samples[few[0], row].runs)
          result = f"{few[0]} has {n} run{'s' if n > 1 else ''}"
        elif is_margin:
          result = _margins_difference(*(samples[n, row] for n in members))
        else:
          result = _difference(samples[a, row], samples[b, row])
        if isinstance(result, str):
          untested.append((a, b, row, result))
        else:
          tested.append((a, b, row, family, result))
  comparisons = []
  for family in ("confirmatory", "exploratory"):
    members = [t for t in tested if t[3] == family]
    if not members:
      continue
    difference, se, df = (np.array([m[4][k] for m in members], np.float64) for k in range(3))
    # No spread on either side (se 0): no estimate of the noise, so no evidence either way.
    spread = se > 0
    p = np.ones(len(members))
    p[spread] = 2 * stats.t.sf(np.abs(difference[spread] / se[spread]), df[spread])
    for (a, b, row, _, (diff, _, _, design)), p_one, p_adj in zip(members, p, holm(p), strict=True):
      verdict = int(np.sign(diff)) if p_adj <= ALPHA else 0
      comparisons.append(
        Comparison(a, b, row, family, design, float(diff), float(p_one), float(p_adj), verdict)
      )
  return Table(rows, cells, comparisons, untested, best_suffix)
