"""The study report's PNG figures (matplotlib, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def selection(path: Path, sel: dict[int, tuple], policies: tuple[str, ...], classes: tuple[str, ...]) -> None:
    """Bars per policy and k, one panel per group class, with CI whiskers."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    ks = sorted(sel)
    width = 0.8 / len(ks)
    for c, ax in enumerate(axes):
        for j, k in enumerate(ks):
            est, lo, hi = sel[k]
            x = np.arange(len(policies)) + (j - (len(ks) - 1) / 2) * width
            y = 100 * est[:, c]
            err = 100 * np.array([est[:, c] - lo[:, c], hi[:, c] - est[:, c]])
            ax.bar(x, y, width, yerr=np.nan_to_num(err), capsize=2, label=f"k={k}")
        ax.set_xticks(np.arange(len(policies)), policies, rotation=20)
        ax.set_title(f"{classes[c]} groups")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("held-out accuracy of the pick (%)")
    axes[0].legend()
    fig.suptitle("Selection policies on the same candidates (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gain_vs_headroom(path: Path, points: list[tuple[int, float, float]], xs: np.ndarray,
                     line: np.ndarray | None, band: tuple[np.ndarray, np.ndarray] | None) -> None:
    """One point per (trajectory, round: headroom, gain), the least-squares
    ``line`` over ``xs`` and its 95% bootstrap ``band``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in sorted({p[0] for p in points}):
        pts = [p for p in points if p[0] == r]
        ax.scatter([100 * p[1] for p in pts], [100 * p[2] for p in pts], label=f"round {r}")
    if line is not None:
        ax.plot(100 * xs, 100 * line, color="black", label="least squares")
    if band is not None:
        ax.fill_between(100 * xs, 100 * band[0], 100 * band[1], color="gray", alpha=0.25, label="95% CI")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel("headroom: 100 - pass@1 of the previous round (points)")
    ax.set_ylabel("pass@1 gain of the round (points)")
    _save(fig, ax, path)


def pass_at_k(path: Path, curves: dict[int, tuple], ks: tuple[int, ...]) -> None:
    """Base and each round, k on a log2 axis, 95% bands."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, (est, lo, hi) in curves.items():
        if np.all(np.isnan(est)):
            continue
        label = "base" if r == 0 else f"round {r}"
        (line,) = ax.plot(ks, 100 * est, label=label, color="black" if r == 0 else None, lw=2 if r == 0 else 1.5)
        ax.fill_between(ks, 100 * lo, 100 * hi, alpha=0.15, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title("pass@k with 95% bootstrap bands")
    _save(fig, ax, path)


def _save(fig, ax, path: Path) -> None:
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def sweep_points(path: Path, points: list[tuple[str, float, list[float]]], xlabel: str, ylabel: str,
                 title: str) -> None:
    """One labelled point per swept value: (label, x in [0, 1], [estimate, low, high] in [0, 1]), y with
    its 95% interval as a whisker."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, x, (est, lo, hi) in points:
        err = np.nan_to_num([[100 * (est - lo)], [100 * (hi - est)]])
        ax.errorbar([100 * x], [100 * est], yerr=err, fmt="o", capsize=4, label=label)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (95% bootstrap CI)")
    _save(fig, ax, path)


def k_star_rounds(path: Path, series: dict[str, dict[int, list[float]]]) -> None:
    """k* of each round against the base, one line per swept value: {label: {round: [k*, low, high]}}
    (NaN: no crossover up to the largest k, not drawn)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, per_round in series.items():
        rounds = sorted(per_round)
        est, lo, hi = (np.array([per_round[r][i] for r in rounds], dtype=float) for i in range(3))
        err = np.nan_to_num([est - lo, hi - est])
        ax.errorbar(rounds, est, yerr=np.clip(err, 0, None), fmt="o-", capsize=4, label=label)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("round")
    ax.set_ylabel("k* (smallest k where base >= trained)")
    ax.set_title("Crossover k* against rounds (95% bootstrap CI)")
    _save(fig, ax, path)
