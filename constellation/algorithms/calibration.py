"""How good is the critic? Ranking (AUROC) and calibration (ECE).

The critic outputs P(held-out correct) for a candidate. Selection by critic
only needs the *ranking* to be right (AUROC); weighting votes by the score and
reading it as a probability also needs it to be *calibrated* (ECE).

Conventions: labels are bools (True = held-out correct); scores/probs are
floats in the same order. Both functions return None when the quantity is not
defined (AUROC with only one class present, ECE with no data) rather than a
misleading 0.5 or 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_lengths(name: str, values: Sequence[float], labels: Sequence[bool]) -> None:
    if len(values) != len(labels):
        raise ValueError(f"{name}: {len(values)} scores but {len(labels)} labels")
    for v in values:
        if math.isnan(v):
            raise ValueError(f"{name}: NaN score")


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a
    random negative), a tie counting one half (Mann-Whitney U / (P * N)).

    Computed from average ranks in O(n log n). None if all labels are equal."""
    _check_lengths("auroc", scores, labels)
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    # 1-based ranks; a run of tied scores all get the run's mean rank, which
    # is exactly what counts each positive/negative tie as one half
    rank_sum_pos = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        rank_sum_pos += mean_rank * sum(1 for i in order[start:end + 1] if labels[i])
        start = end + 1
    u_pos = rank_sum_pos - n_pos * (n_pos + 1) / 2  # pairs won by positives
    return u_pos / (n_pos * n_neg)


def expected_calibration_error(probs: Sequence[float], labels: Sequence[bool],
                               bins: int = 10) -> float | None:
    """ECE with ``bins`` equal-width bins over [0, 1]:

        sum over bins b of  (n_b / n) * |mean prob in b - share correct in b|

    A prob of exactly 1.0 falls in the last bin. Raises ValueError for a prob
    outside [0, 1] or bins < 1; None if there is no data."""
    _check_lengths("expected_calibration_error", probs, labels)
    if bins < 1:
        raise ValueError(f"expected_calibration_error: need bins >= 1, got {bins}")
    if not probs:
        return None
    count = [0] * bins
    prob_sum = [0.0] * bins
    correct = [0] * bins
    for p, y in zip(probs, labels):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"expected_calibration_error: prob {p!r} outside [0, 1]")
        b = min(int(p * bins), bins - 1)
        count[b] += 1
        prob_sum[b] += p
        correct[b] += bool(y)
    n = len(probs)
    return sum(abs(prob_sum[b] - correct[b]) / n for b in range(bins) if count[b])
