"""PNG plots for the report: IQM intervals, per-game bars, performance profiles, scaling,
fine-tuning learning curves.

`build` gathers the numbers; this module only draws them (headless, Agg backend).
"""

import collections
import csv
import os
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scaled_ql.report import scores, tables  # noqa: E402


def plot_intervals(path, estimates):
  """One panel per metric: each group's CI as a bar, its point estimate as a line and a dot."""
  fig = intervals_figure(estimates)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def intervals_figure(estimates):
  """The figure of `plot_intervals`: group y of `estimates` is drawn at height y."""
  labels = [tables.group_label(g) for g in estimates]
  fig, axes = plt.subplots(
    1, len(scores.METRICS), figsize=(4 * len(scores.METRICS), 1 + 0.5 * len(labels))
  )
  for ax, metric in zip(axes, scores.METRICS, strict=True):
    for y, est in enumerate(estimates.values()):
      e = est[metric]
      ax.barh(y, 100 * (e.ci_high - e.ci_low), left=100 * e.ci_low, height=0.6, alpha=0.6)
      ax.plot([100 * e.value] * 2, [y - 0.3, y + 0.3], color="k")
      # A single run's CI has zero width: the dot keeps its estimate visible.
      ax.plot(100 * e.value, y, "o", color="k", markersize=4, zorder=3)
    # Bars pin the x limit to their edges; a point at that edge would sit on the axis.
    ax.use_sticky_edges = False
    ax.margins(x=0.05)
    ax.set_yticks(range(len(labels)), labels if metric == scores.METRICS[0] else [""] * len(labels))
    ax.set_title(metric.replace("_", " ").upper() if metric == "iqm" else metric.replace("_", " "))
    ax.set_xlabel("human-normalised score (%)")
  fig.tight_layout()
  return fig


def plot_per_game(path, per_game_hns):
  game_names = sorted({g for d in per_game_hns.values() for g in d})
  fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(game_names) * max(1, len(per_game_hns))), 4))
  width = 0.8 / max(1, len(per_game_hns))
  for k, (group, by_game) in enumerate(per_game_hns.items()):
    xs = np.arange(len(game_names)) + k * width
    ax.bar(
      xs,
      [100 * by_game.get(g, np.nan) for g in game_names],
      width,
      label=tables.group_label(group),
    )
  ax.set_xticks(np.arange(len(game_names)) + 0.4 - width / 2, game_names, rotation=60, ha="right")
  ax.set_ylabel("human-normalised score (%)")
  ax.axhline(100, color="gray", lw=0.5, ls="--")
  if per_game_hns:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_profiles(path, matrices, reps, seed):
  taus = np.linspace(-0.5, 2.5, 61)
  profiles, cis = {}, {}
  if matrices:
    profiles, cis = scores.performance_profiles(
      {tables.group_label(g): m for g, m in matrices.items()}, taus, reps=reps, seed=seed
    )
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, profile in profiles.items():
    ax.plot(100 * taus, profile, label=label)
    ax.fill_between(100 * taus, cis[label][0], cis[label][1], alpha=0.2)
  ax.set_xlabel("human-normalised score threshold tau (%)")
  ax.set_ylabel("fraction of runs x games with score > tau")
  if profiles:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def scaling(output, estimates, matrices, left_out, reps=2000, seed=0):
  """IQM vs parameters per (method, data quality), with a power-law fit where possible.

  Every size left out of a fit is named in `left_out`; r^2 is written only with 3 or more
  sizes; the exponent's 95% interval resamples the runs within each size and refits.

  Args:
    output: the report directory (scaling.png, scaling.csv).
    estimates: group -> metric -> scores.Estimate (`build`).
    matrices: group -> float [num_runs, num_games], the runs behind each estimate.
    left_out: notes of what the fit could not use, appended to.
    reps: bootstrap resamples of the exponent.
    seed: seeds them.
  """
  series = collections.defaultdict(list)
  for group, est in estimates.items():
    if group[2]:
      series[group[:2]].append((group[2], est["iqm"], matrices[group]))
  fig, ax = plt.subplots(figsize=(6, 4))
  rows = []
  for (method, quality), points in sorted(series.items(), key=lambda kv: kv[0]):
    points.sort(key=lambda p: p[0])
    n = np.array([p[0] for p in points], np.float64)
    iqm = np.array([p[1].value for p in points])
    err = np.array([[p[1].value - p[1].ci_low, p[1].ci_high - p[1].value] for p in points]).T
    label = f"{tables.METHOD_NAMES.get(method, method)} ({quality})"
    bars = ax.errorbar(n, 100 * iqm, yerr=100 * err, fmt="o", capsize=3, label=label)
    positive = iqm > 0
    for size, value in zip(n[~positive], iqm[~positive], strict=True):
      left_out.append(f"scaling fit {label}: size {size:.0f} left out (IQM {value:.3f} <= 0)")
    runs_per_size = "/".join(str(len(p[2])) for p, keep in zip(points, positive, strict=True)
                             if keep)  # fmt: skip
    if len(np.unique(n[positive])) < 2:
      left_out.append(
        f"scaling fit {label}: needs >= 2 model sizes with IQM > 0, have "
        f"{int(positive.sum())} of {len(n)} sizes"
      )
      rows.append([method, quality, int(positive.sum()), int((~positive).sum()), runs_per_size]
                  + ["—"] * 5)  # fmt: skip
      continue
    fit = scores.fit_power_law(n[positive], iqm[positive])
    low, high, num_fitted = scores.power_law_exponent_interval(
      n[positive], [p[2] for p, keep in zip(points, positive, strict=True) if keep],
      reps=reps, seed=seed,
    )  # fmt: skip
    if num_fitted < reps:
      left_out.append(f"scaling fit {label}: exponent interval from {num_fitted} of {reps} "
                      "resamples (in the others a size's IQM was <= 0)")  # fmt: skip
    grid = np.geomspace(n.min(), n.max(), 50)
    ax.plot(
      grid,
      100 * fit.coefficient * grid**fit.exponent,
      color=bars[0].get_color(),
      ls="--",
      label=f"{label} fit: exponent {fit.exponent:.3f} [{low:.3f}, {high:.3f}]",
    )
    rows.append(
      [
        method,
        quality,
        fit.num_points,
        int((~positive).sum()),
        runs_per_size,
        f"{fit.exponent:.4f}",
        f"{low:.4f}",
        f"{high:.4f}",
        f"{fit.coefficient:.4g}",
        "—" if np.isnan(fit.r_squared) else f"{fit.r_squared:.3f}",
      ]
    )
  ax.set_xscale("log")
  if series and all(p[1].ci_low > 0 for points in series.values() for p in points):
    ax.set_yscale("log")  # A power law is a straight line in log-log axes.
  ax.set_xlabel("parameters")
  ax.set_ylabel("IQM human-normalised score (%)")
  ax.set_title("score = a * params^b (fit on IQM > 0; exponent [95% CI])")
  if series:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(output, "scaling.png"), dpi=100)
  plt.close(fig)
  header = ["method", "data_quality", "num_sizes", "num_sizes_dropped", "runs_per_size",
            "exponent", "exponent_ci_low", "exponent_ci_high", "coefficient", "r_squared"]  # fmt: skip
  with open(os.path.join(output, "scaling.csv"), "w", newline="") as f:
    csv.writer(f).writerows([header, *rows])


SMOOTHING_POINTS = 5  # Smoothed curves: a running mean over this many logged points.


class CurvePanel(NamedTuple):
  title: str
  x_label: str
  y_label: str
  smooth: bool  # Noisy points (training episodes' returns): drawn as a running mean.


def plot_learning_curves(path, curves):
  """One panel per game (variant): pretrained vs scratch, mean over runs and their range.

  Args:
    path: the PNG to write.
    curves: {CurvePanel: {init: [(x [n], y [n]) per run]}} (`build.finetune_curves`).
  """
  panels = sorted(curves)
  fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.5),
                           squeeze=False)  # fmt: skip
  for ax, panel in zip(axes[0], panels, strict=False):
    for init, color in (("pretrained", "C0"), ("scratch", "C1")):
      if init not in curves[panel]:
        continue
      grid, ys = _on_common_grid(curves[panel][init], panel.smooth)
      ax.plot(grid, ys.mean(0), color=color, label=f"{init} ({len(ys)} runs)")
      ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)
    ax.set_title(panel.title)
    ax.set_xlabel(panel.x_label)
    ax.set_ylabel(panel.y_label + (f" (mean of {SMOOTHING_POINTS} logs)" if panel.smooth else ""))
    ax.legend(fontsize=7)
  if not panels:
    axes[0][0].set_title("no fine-tuning runs")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _on_common_grid(runs_xy, smooth: bool):
  """Runs' curves interpolated on the first run's x within the range all runs cover.

  Returns:
    grid [n], ys [num_runs, n].
  """
  if smooth and all(len(y) >= SMOOTHING_POINTS for _, y in runs_xy):  # All runs alike, or none.
    kernel = np.ones(SMOOTHING_POINTS) / SMOOTHING_POINTS
    runs_xy = [(x, np.convolve(y, kernel, "valid")) for x, y in runs_xy]
    runs_xy = [(x[len(x) - len(y) :], y) for x, y in runs_xy]  # Each mean at its window's end.
  low = max(x[0] for x, _ in runs_xy)
  high = min(x[-1] for x, _ in runs_xy)
  grid = runs_xy[0][0][(runs_xy[0][0] >= low) & (runs_xy[0][0] <= high)]
  return grid, np.stack([np.interp(grid, x, y) for x, y in runs_xy])
