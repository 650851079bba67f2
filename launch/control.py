"""Positive controls: can this configuration show the effects a study looks for?

A null result from an instrument that has never shown a known effect cannot be
told apart from a broken instrument. ``constellation control --preset P`` (and
``constellation study``, for each of its seeds) measures two known effects
before anyone reads a STaR number:

  trainer control    SFT with the configured trainer (trainer.*: the budget of
                     a STaR round) on the reference completions of one round's
                     worth of training problems (coordinator.problems_per_round,
                     oracle data), then held-out pass@1 of the trained model
                     minus the base's. Both are evaluated as phase "eval" of
                     round 0, each in its own run store, so the i-th sample of
                     a problem has the same sampling seed in both: a paired
                     comparison, and a trainer that cannot change the model
                     (trainer.lr = 0) gives exactly 0. Passes when the 95%
                     interval lies above 0; otherwise the trainer cannot learn
                     at this budget.
  selection control  on the same evaluation pools (base and trained), the
                     oracle pick (by held-out truth) minus best-of-k at
                     eval.selection_k, with the share of groups whose
                     visible-pass candidates disagree on held-out inputs. Passes
                     when the interval lies above 0: there is something for a
                     critic to find. Where it fails, the disagree share says why.

Intervals are the study's bootstrap (seeds, then problems within seeds;
launch/study_report.py). A control directory:

  <dir>/               prepared like a run (config.toml, split, base model);
                       the trained model's evaluation (run.sqlite), adapters/v1
  <dir>/base/          the base's evaluation, unless read from a study
                       trajectory of the same config and seed (the same base,
                       split and sampling seeds)
  <dir>/control.json   written last: a finished control is read, not re-run
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from constellation.algorithms.bootstrap import bootstrap, identity_plan
from constellation.protocol import config as config_mod
from constellation.protocol import messages as m
from constellation.runtime.coordinator import Coordinator
from constellation.runtime.store import connect, load_split, read_pools
from launch.inprocess import in_process
from launch.study_report import (Report, StudyError, Trajectory, _ci, pass_curve, selection_stat,
                                 trajectory_of)

PASSES, FAILS = "passes", "fails"
DONE_FILE = "control.json"


def oracle_examples(cfg: config_mod.Config, split: m.Split) -> list[m.TrainExample]:
    """One round's worth of training problems (drawn from the training pool
    without the guard's validation problems, seeded by run.seed), each with its
    reference completion: what a perfect selector would hand the trainer."""
    n_val = cfg.guard.val_problems if cfg.guard.enabled else 0
    pool = split.train[:max(0, len(split.train) - n_val)]
    rng = random.Random(f"control/{cfg.run.seed}")
    problems = rng.sample(pool, min(cfg.coordinator.problems_per_round, len(pool)))
    from constellation.models.base_model import warm_start_target  # the warm start's target: no torch import

    examples = [m.TrainExample(problem_id=p.id, prompt=p.prompt, completion=target)
                for p in problems if (target := warm_start_target(p))]
    if not examples:
        raise StudyError(f"trainer control: none of {len(problems)} training problems has a reference completion "
                         f"(task.impl = {cfg.task.impl!r})")
    return examples


def run_control(cfg: config_mod.Config, control_dir: Path, base_run: Path | None = None,
                console: Console | None = None) -> Trajectory:
    """One seed's controls in ``control_dir`` (or the finished ones read back)
    -> a Trajectory whose round 0 is the base and round 1 the oracle-trained
    model. ``base_run``: a run of the same config whose round-0 evaluation is
    the base's (a study's trajectory), instead of sampling it again."""
    control_dir = Path(control_dir).resolve()
    base_store = Path(base_run) if base_run is not None else control_dir / "base"
    if not (control_dir / DONE_FILE).exists():
        t0 = time.monotonic()
        info = _run(cfg, control_dir, base_run is None)
        info.update(seed=cfg.run.seed, base_from=str(base_store), seconds=round(time.monotonic() - t0, 1))
        (control_dir / DONE_FILE).write_text(json.dumps(info, indent=1))
        if console is not None:
            console.print(f"control seed {cfg.run.seed}: {info['n_examples']} oracle examples, "
                          f"{info['seconds']:.0f}s", highlight=False)
    pools = {0: _eval_pools(base_store), 1: _eval_pools(control_dir)}
    if set(pools[0]) != set(pools[1]):
        raise StudyError(f"{base_store}: its base evaluation is of other problems than {control_dir}'s "
                         f"(not the same config and seed?)")
    return trajectory_of(cfg.run.seed, control_dir, pools, list(cfg.eval.selection_ks))


def _run(cfg: config_mod.Config, control_dir: Path, sample_base: bool) -> dict:
    """Sample the base (unless given), train on oracle data, sample the trained
    model. The controls drive the coordinator's request loop with a round of
    their own (train, serve), so they reach roles exactly as a run does."""
    n = cfg.eval.n_samples
    with in_process(cfg, control_dir, roles=("generator", "verifier", "trainer")) as coordinator:
        split = load_split(control_dir)
        if sample_base:  # its own store: the same phase name and round, so the same sampling seeds
            (control_dir / "base").mkdir(exist_ok=True)
            base = Coordinator(cfg, control_dir / "base", coordinator.client)
            try:
                base.sample("eval", 0, split.eval, n)
            finally:
                base.close()
        coordinator.wait_for_workers()
        wants = coordinator.role_info.get("trainer", {}).get("wants", "examples")
        if wants != "examples":
            raise StudyError(f"the trainer control needs a trainer that wants SFT examples; trainer.impl = "
                             f"{cfg.trainer.impl!r} wants {wants!r}")
        examples = oracle_examples(cfg, split)
        ready = coordinator.request("trainer", m.TrainRequest(request_id="control/train", round=1,
                                                                examples=examples))
        loaded = coordinator.request("generator", m.LoadAdapter(request_id="control/load", version=ready.version,
                                                                 path=ready.path))
        coordinator.served_version, coordinator.served_path = loaded.version, ready.path
        coordinator.sample("eval", 0, split.eval, n)
    return {"n_examples": len(examples), "adapter_version": ready.version, "trainer_metrics": ready.metrics}


def _eval_pools(run_dir: Path) -> dict:
    conn = connect(run_dir / "run.sqlite", readonly=True)
    try:
        pools = read_pools(conn, 0, "eval")
    finally:
        conn.close()
    if not pools:
        raise StudyError(f"{run_dir}: no evaluation recorded at round 0")
    return pools


# --------------------------------------------------------------------------
# The report section
# --------------------------------------------------------------------------


def trainer_gain(controls: list[Trajectory], n_boot: int) -> tuple[float, float, float]:
    """Held-out pass@1 of the oracle-trained model minus the base's -> (estimate, low, high)."""
    def gain(plan):
        return (pass_curve(controls, lambda t: 1, plan, (1,)) - pass_curve(controls, lambda t: 0, plan, (1,)))[0]

    est, lo, hi = bootstrap(gain, [len(t.problems) for t in controls], n_boot)
    return float(est), float(lo), float(hi)


def oracle_margin(trajs: list[Trajectory], k: int, n_boot: int, first_round: int) -> tuple[list[float], float, int]:
    """Oracle minus best-of-k at k on every group of rounds >= first_round ->
    ([estimate, low, high], disagree share, groups)."""
    policies = trajs[0].policies
    oi, bi = policies.index("oracle"), policies.index("best_of_k")
    est, lo, hi = bootstrap(lambda plan: (lambda a: a[oi, 0] - a[bi, 0])(selection_stat(trajs, k, plan, first_round)),
                            [len(t.problems) for t in trajs], n_boot)
    counts = sum(t.sel_count[r][k].sum(axis=0) for t in trajs for r in t.rounds
                 if r >= first_round and k in t.sel_count[r])
    groups = int(counts[0]) if np.ndim(counts) else 0
    share = float(counts[2] / counts[0]) if groups else float("nan")
    return [float(est), float(lo), float(hi)], share, groups


def control_report(controls: list[Trajectory], k: int, n_boot: int,
                   study: list[Trajectory] | None = None) -> Report:
    """The "Positive controls" section: verdicts (passes | fails) and numbers.
    ``study``: the study's trajectories, whose trained-round pools (the ones
    finding 1 is measured on) get a selection control of their own."""
    sizes = [len(t.problems) for t in controls]
    ks = sorted(controls[0].sel_count[0])
    if not ks:
        raise StudyError("selection control: no k of eval.selection_ks is at most eval.n_samples")
    k = k if k in ks else ks[len(ks) // 2]
    gain = trainer_gain(controls, n_boot)
    p1 = {r: float(pass_curve(controls, lambda t, r=r: r, identity_plan(sizes), (1,))[0]) for r in (0, 1)}
    findings = {"trainer_control": PASSES if gain[1] > 0 else FAILS}
    lines = ["## Positive controls", "",
             f"Trainer control: the configured trainer, with the budget of a STaR round, trained on reference "
             f"completions of one round's training problems ({len(controls)} seeds "
             f"x {sizes[0]} evaluation problems). Held-out pass@1 {100 * p1[0]:.1f}% (base) -> {100 * p1[1]:.1f}% "
             f"(oracle SFT): gain {_ci(*gain)} points: **{findings['trainer_control']}**.", ""]
    if findings["trainer_control"] == FAILS:
        lines += ["**The trainer cannot learn at this budget**: even oracle data does not raise held-out pass@1 "
                  "with an interval above 0, so a null STaR result of this configuration says nothing about "
                  "self-training. Change the trainer's dose (trainer.lr, trainer.epochs, the step or time "
                  "budget) until this control passes.", ""]
    numbers = {"trainer_gain": list(gain), "pass_at_1": {"base": p1[0], "oracle_sft": p1[1]}}
    pools = [("control pools (base and oracle-trained)", controls, 0)]
    if study:
        pools.append(("the study's trained-round pools (those of finding 1)", study, 1))
    lines += [f"Selection control at k = {k}: oracle (the pick by held-out truth) minus best-of-k, and the share "
              f"of groups whose visible-pass candidates disagree on held-out inputs (only there can any "
              f"selector beat best-of-k).", "", "| pools | groups | disagree share | oracle - best-of-k (points) "
              "| verdict |", "|---|---|---|---|---|"]
    for name, trajs, first in pools:
        margin, share, groups = oracle_margin(trajs, k, n_boot, first)
        verdict = PASSES if margin[1] > 0 else FAILS
        key = "selection_control" if first == 0 else "selection_control_study"
        findings[key] = verdict
        numbers[key] = {"k": k, "oracle_minus_best_of_k": margin, "disagree_share": share, "groups": groups}
        lines.append(f"| {name} | {groups} | {100 * share:.1f}% | {_ci(*margin)} | **{verdict}** |")
    lines.append("")
    if FAILS in (findings["selection_control"], findings.get("selection_control_study")):
        lines += ["Where the selection control fails, no selector (critic included) can beat best-of-k on "
                  "these pools: the critic cannot help here, by measurement (see the disagree share).", ""]
    return Report("\n".join(lines), findings, numbers)


def run_controls(preset: str, seeds: int, overrides: list[str], out: Path, console: Console,
                 first_seed: int = 0, n_boot: int = 1000) -> Report:
    """``constellation control``: the controls of seeds first_seed.. in
    ``<out>/seed-<s>``, and their report in ``<out>/report.md``."""
    from launch.study import seed_overrides

    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out).resolve()
    controls = []
    for s in range(first_seed, first_seed + seeds):
        cfg = config_mod.load(preset, seed_overrides(overrides, s))
        console.rule(f"control: seed {s}")
        controls.append(run_control(cfg, out / f"seed-{s}", console=console))
    report = control_report(controls, cfg.eval.selection_k, n_boot)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(f"# constellation positive controls: preset {preset}\n\n" + report.markdown)
    (out / "report.json").write_text(json.dumps({"findings": report.findings, **report.numbers}, indent=1))
    for name, verdict in report.findings.items():
        console.print(f"  {name}: {verdict}")
    console.print(f"report: {out / 'report.md'}")
    return report
