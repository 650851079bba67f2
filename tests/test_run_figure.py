"""`constellation table RUN_DIR --plot FILE` (launch/run_figure.py): the pass@k
curves of a run as a PNG of a few tens of KB, the same bytes every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from constellation.runtime.store import RunStore
from launch.run_figure import FigureError, curves, plot_run

ROOT = Path(__file__).resolve().parent.parent
KS = [1, 2, 4, 8, 16, 32, 64]


def write_run(run_dir: Path, models: dict[str, list[float]], k_star: int | None) -> Path:
    run_dir.mkdir(parents=True)
    store = RunStore(run_dir)
    for r, (model, values) in enumerate(models.items()):
        store.event(ev.Eval(round=r, model=model, adapter_version=r, n_problems=10, n_samples=64,
                            pass_at_k={str(k): v for k, v in zip(KS, values)}, selection_k=8,
                            selection_accuracy={}, n_agree=10))
        if r:
            store.event(ev.Crossover(round=r, k_star=k_star))
    store.close()
    return run_dir


def test_a_run_plots_to_the_same_small_png_twice_and_the_cli_draws_it(tmp_path):
    run = write_run(tmp_path / "run", {"base": [0.3, 0.45, 0.6, 0.8, 0.9, 0.95, 1.0],
                                       "round-1": [0.5, 0.65, 0.8, 0.9, 0.93, 0.94, 0.94]}, 16)
    data, k_star = curves(run)
    assert k_star == 16 and data["round-1"][1] == 50.0 and list(data) == ["base", "round-1"]
    a, b = plot_run(run, tmp_path / "a.png"), plot_run(run, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < a.stat().st_size < 100_000
    out = subprocess.run([sys.executable, "-m", "launch.cli", "table", str(run), "--plot", str(tmp_path / "c.png")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.png").read_bytes() == a.read_bytes()


def test_a_run_without_a_base_evaluation_is_one_clear_error(tmp_path):
    run = write_run(tmp_path / "run", {}, None)
    with pytest.raises(FigureError, match="no evaluation of the base"):
        plot_run(run, tmp_path / "x.png")
    out = subprocess.run([sys.executable, "-m", "launch.cli", "table", str(run), "--plot", str(tmp_path / "x.png")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1
