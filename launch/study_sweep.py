"""``constellation study --sweep KEY=V1,V2,...``: where each finding holds.

For each value the whole study runs (its seeds, its positive controls, its
report) in ``<out>/<KEY>=<V>/``, with ``--set KEY=V`` added to the overrides;
a finished value is skipped like a finished trajectory. The sweep's report
(``<out>/report.md``, ``report.json``) puts the values side by side, each
number with its interval from that value's study, compares each value's
pass@k with the first value's on the same seeds and problems (a paired
bootstrap, launch/study_paired.py), and draws three figures:

  sweep_selection.png  critic minus best-of-k against the disagree share
  sweep_headroom.png   round-1 pass@1 gain against the base's headroom
                       (1 - base pass@1)
  sweep_kstar.png      k* (each round against the base) against rounds

so three yes/no findings become curves a reader can check.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from constellation.protocol import config as config_mod
from launch import study_figures
from launch.study_paired import paired_section
from launch.study_report import Report, StudyError, Trajectory, load_trajectory

FINDINGS = ("selection", "headroom", "crossover")
CONTROLS = ("trainer_control", "trainer_control_on_policy", "selection_control")


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """"section.key=v1,v2,..." -> ("section.key", ["v1", "v2", ...]); each value
    is read as TOML by the config loader, as with --set (a list value cannot
    be swept: its commas would split it)."""
    key, eq, values = spec.partition("=")
    items = [v.strip() for v in values.split(",")] if eq else []
    if not re.fullmatch(r"[a-z_]+\.[a-z_]+", key.strip()) or len(items) < 2 or not all(items):
        raise StudyError(f"--sweep {spec!r}: expected SECTION.KEY=V1,V2,... with at least two values")
    if "[" in values:
        raise StudyError(f"--sweep {spec!r}: a list value cannot be swept (its commas split the values)")
    return key.strip(), items


def value_dir(out: Path, key: str, value: str) -> Path:
    return out / re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{key}={value}")


def run_sweep(preset: str, spec: str, seeds: int, overrides: list[str], out: Path, console: Console,
              **study_options: Any) -> dict[str, Report]:
    """Every value's study, then the sweep report -> value -> its study's Report."""
    from launch.study import run_study

    key, values = parse_sweep(spec)
    ks = list(config_mod.load(preset, [*overrides, f"{key}={values[0]}"]).eval.ks)
    out = Path(out).resolve()
    reports = {}
    for i, value in enumerate(values):
        console.rule(f"sweep {key}: value {value} ({i + 1} of {len(values)})")
        reports[value] = run_study(preset, seeds, [*overrides, f"{key}={value}"], value_dir(out, key, value),
                                   console, **study_options)
    write_sweep_report(key, reports, out, title=f"preset {preset}, {seeds} seeds per value",
                       paired=(ks, study_options.get("n_boot", 1000)))
    console.print(f"sweep report: {out / 'report.md'}")
    return reports


def _cell(triple: list[float] | None, scale: float = 100.0) -> str:
    if not triple or not all(math.isfinite(x) for x in triple):
        return "n/a"
    est, lo, hi = (scale * x for x in triple)
    return f"{est:.1f} [{lo:.1f}, {hi:.1f}]"


def _row(key: str, value: str, rep: Report, out: Path) -> list[str]:
    n = rep.numbers
    controls = n.get("controls", {})
    verdicts = controls.get("verdicts", {})
    sel = n.get("critic_minus_best_of_k", {})
    share = sel.get("disagree_share", math.nan)
    base = n.get("base_pass_at_1")
    link = f"[{value}]({value_dir(out, key, value).name}/report.md)"
    return [link, *(verdicts.get(c, "not run") for c in CONTROLS),
            "n/a" if not math.isfinite(share) else f"{100 * share:.1f}%", _cell(sel.get("all")),
            rep.findings.get("selection", "n/a"), _cell(base),
            _cell(n.get("gain_per_round", {}).get("1")), rep.findings.get("headroom", "n/a"),
            str(n.get("crossover", {}).get("pooled") or "none"), rep.findings.get("crossover", "n/a")]


def load_arms(key: str, reports: dict[str, Report], out: Path) -> dict[str, list[Trajectory]]:
    """value -> its study's reported trajectories (pass@k only: no selection ks), re-read from run.sqlite."""
    return {value: [load_trajectory(value_dir(out, key, value) / "runs" / f"seed-{s}", s, [])
                    for s in rep.numbers["seeds"]] for value, rep in reports.items()}


def write_sweep_report(key: str, reports: dict[str, Report], out: Path, title: str = "",
                       figures: bool = True, paired: tuple[list[int], int] | None = None) -> str:
    """The side-by-side table, the paired comparison (``paired``: eval.ks and
    bootstrap resamples; None leaves it out) and the three figures -> the
    markdown (also written)."""
    out.mkdir(parents=True, exist_ok=True)
    header = ["value", *CONTROLS, "disagree share", "critic - best-of-k", "finding 1", "base pass@1",
              "round-1 gain", "finding 2", "k* (final)", "finding 3"]
    lines = [f"# constellation sweep over {key}{': ' + title if title else ''}", "",
             "Each value is a whole study (its seeds, positive controls and report, linked). Numbers in points "
             "with 95% bootstrap intervals (seeds, then problems within seeds). Findings: 1 critic beats "
             "best-of-k, 2 STaR gains track headroom, 3 the base overtakes the trained model at large k (k*).", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(_row(key, v, rep, out)) + " |" for v, rep in reports.items()]
    lines.append("")
    paired_numbers = None
    if paired is not None:
        section, paired_numbers = paired_section(key, load_arms(key, reports, out), *paired)
        lines += section
    if figures:
        lines += _figures(key, reports, out)
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    (out / "report.json").write_text(json.dumps(
        {"key": key, "values": {v: {"findings": r.findings, **r.numbers} for v, r in reports.items()},
         **({"paired": paired_numbers} if paired_numbers else {})}, indent=1))
    return markdown


def _figures(key: str, reports: dict[str, Report], out: Path) -> list[str]:
    """The three sweep figures; a value without a number is left out of a figure."""
    sel, gain, kstar = [], [], {}
    for value, rep in reports.items():
        n, label = rep.numbers, f"{key}={value}"
        c = n.get("critic_minus_best_of_k", {})
        if c.get("all") and math.isfinite(c.get("disagree_share", math.nan)):
            sel.append((label, c["disagree_share"], c["all"]))
        if n.get("base_pass_at_1") and n.get("gain_per_round", {}).get("1"):
            gain.append((label, 1.0 - n["base_pass_at_1"][0], n["gain_per_round"]["1"]))
        kstar[label] = {int(r): v for r, v in n.get("k_star_per_round", {}).items()}
    lines = []
    if sel:
        study_figures.sweep_points(out / "sweep_selection.png", sel, "disagree share of groups (%)",
                                   "critic - best-of-k (points)", "Selection gain against ambiguity")
        lines += ["![critic minus best-of-k against the disagree share](sweep_selection.png)", ""]
    if gain:
        study_figures.sweep_points(out / "sweep_headroom.png", gain, "base headroom: 100 - base pass@1 (points)",
                                   "round-1 pass@1 gain (points)", "Round-1 gain against the base's headroom")
        lines += ["![round-1 gain against headroom](sweep_headroom.png)", ""]
    if any(kstar.values()):
        study_figures.k_star_rounds(out / "sweep_kstar.png", kstar)
        lines += ["![k* against rounds](sweep_kstar.png)", ""]
    return lines
