"""One run's pass@k curves as a PNG: ``constellation table RUN_DIR --plot FILE``.

The base and each evaluated round, pass@k against k on a log2 axis, with the
crossover k* of the last round marked (the smallest k at which the base's
pass@k reaches the round's). Everything is read from the run's
metrics.jsonl; the same run directory gives the same bytes (no date or
version in the file), which tests/test_run_figure.py checks.
"""

from __future__ import annotations

from pathlib import Path

from constellation.protocol import events as ev
from constellation.runtime.store import read_events


class FigureError(ValueError):
    pass


def curves(run_dir: Path) -> tuple[dict[str, dict[int, float]], int | None]:
    """-> (model -> {k: pass@k in %}, in round order; the last round's k* or None)."""
    out: dict[str, dict[int, float]] = {}
    k_star: int | None = None
    for e in read_events(run_dir):
        if isinstance(e, ev.Eval):
            out[e.model] = {int(k): 100 * v for k, v in sorted(e.pass_at_k.items(), key=lambda kv: int(kv[0]))}
        elif isinstance(e, ev.Crossover):
            k_star = e.k_star
    if "base" not in out:
        raise FigureError(f"{run_dir} has no evaluation of the base yet: nothing to plot")
    return out, k_star


def plot_run(run_dir: Path, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, k_star = curves(run_dir)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for model, points in data.items():
        ks, ys = list(points), list(points.values())
        base = model == "base"
        ax.plot(ks, ys, marker="o", ms=3, label=model.replace("-", " "), color="black" if base else None,
                lw=2.2 if base else 1.4, zorder=3 if base else 2)
    last = list(data)[-1]
    if k_star is not None and last != "base":
        ax.axvline(k_star, color="grey", ls="--", lw=1)
        right = k_star >= 8  # the label goes on the side of the line with more room
        ax.annotate(f"k* = {k_star}: the base catches up with {last.replace('-', ' ')}", (k_star, 0.03),
                    xycoords=("data", "axes fraction"), xytext=(-4 if right else 4, 0), textcoords="offset points",
                    ha="right" if right else "left", fontsize=8, color="dimgrey")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({k for points in data.values() for k in points}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("held-out pass@k (%)")
    ax.set_title(f"pass@k of the base and each round: {Path(run_dir).name}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
