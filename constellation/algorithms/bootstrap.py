"""A two-level bootstrap: percentile intervals of a statistic of several runs
(seeds) of many problems each.

A resample draws the runs with replacement (when there are several), then each
drawn run's problems with replacement; a run drawn twice gets two independent
problem resamples. The problem is the unit: a statistic receives a ``Plan``
(run index, problem indices) and aggregates all of a problem's samples
together, so correlated samples of one problem never count as independent.
Used by the study's report and by ``probe``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

Plan = list[tuple[int, np.ndarray]]  # (run index, problem indices) per drawn run


def identity_plan(sizes: list[int]) -> Plan:
    return [(s, np.arange(n)) for s, n in enumerate(sizes)]


def resample_plans(sizes: list[int], n_boot: int, rng: np.random.Generator) -> list[Plan]:
    """``n_boot`` resamples: draw len(sizes) runs with replacement (when there
    are several), then each drawn run's problems with replacement. ``sizes``:
    problems per run."""
    plans = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(sizes), len(sizes)) if len(sizes) > 1 else [0]
        plans.append([(int(s), rng.integers(0, sizes[s], sizes[s])) for s in drawn])
    return plans


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval over bootstrap replicates (axis 0); NaN replicates dropped."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():  # an all-NaN column (an empty class) gives NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return lo, hi


def bootstrap(statistic: Callable[[Plan], Any], sizes: list[int], n_boot: int,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (estimate, ci_low, ci_high) of ``statistic(plan)`` (a float or array)."""
    rng = np.random.default_rng(seed)
    estimate = np.asarray(statistic(identity_plan(sizes)), dtype=float)
    reps = np.array([np.asarray(statistic(plan), dtype=float) for plan in resample_plans(sizes, n_boot, rng)])
    lo, hi = percentile_ci(reps)
    return estimate, np.asarray(lo), np.asarray(hi)
