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
  on-policy control  the same trainer and budget on the base's OWN programs
                     for the same training problems, one held-out-correct
                     candidate per solved problem of ``coordinator.k`` samples
                     (the oracle selection policy: a STaR round with a perfect
                     verifier). Reference programs can be off-policy for the
                     model (they are programs it would not write: compare the
                     two arms' first-step losses); where the reference control
                     fails and this one passes, the trainer can learn at this
                     budget and what it cannot use is the reference data.
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
  <dir>/on_policy/     the on-policy arm, prepared like a run: the base's
                       training sample, the trained model's evaluation
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
from constellation.algorithms.selection import Sample, select_training_examples
from constellation.protocol import config as config_mod
from constellation.protocol import messages as m
from constellation.runtime.coordinator import Coordinator
from constellation.runtime.store import connect, load_split, read_pools
from launch.inprocess import in_process
from launch.study_report import (Report, StudyError, Trajectory, _ci, pass_curve, selection_stat,
                                 trajectory_of)

PASSES, FAILS = "passes", "fails"
DONE_FILE = "control.json"
ON_POLICY = "on_policy"  # the on-policy arm's directory in a control directory


def seed_overrides(overrides: list[str], seed: int) -> list[str]:
    """The overrides of seed ``seed``'s run: a study's trajectory (launch/study.py) and a control's alike."""
    return [*overrides, f"run.seed={seed}", f"run.name=seed-{seed}"]


def control_problems(cfg: config_mod.Config, split: m.Split) -> list[m.Problem]:
    """One round's worth of training problems, drawn from the training pool
    without the guard's validation problems, seeded by run.seed: the same for
    both trainer arms."""
    n_val = cfg.guard.val_problems if cfg.guard.enabled else 0
    pool = split.train[:max(0, len(split.train) - n_val)]
    rng = random.Random(f"control/{cfg.run.seed}")
    return rng.sample(pool, min(cfg.coordinator.problems_per_round, len(pool)))


def oracle_examples(cfg: config_mod.Config, split: m.Split) -> list[m.TrainExample]:
    """The control's training problems, each with its reference completion:
    what a perfect selector would hand the trainer if the model wrote like the
    task's reference."""
    problems = control_problems(cfg, split)
    from constellation.models.base_model import warm_start_target  # the warm start's target: no torch import

    examples = [m.TrainExample(problem_id=p.id, prompt=p.prompt, completion=target)
                for p in problems if (target := warm_start_target(p))]
    if not examples:
        raise StudyError(f"trainer control: none of {len(problems)} training problems has a reference completion "
                         f"(task.impl = {cfg.task.impl!r})")
    return examples


def own_correct_examples(cfg: config_mod.Config, pools: dict[str, list[Sample]],
                         problems: dict[str, m.Problem]) -> list[m.TrainExample]:
    """The base's own programs that are held-out correct, ``coordinator.per_problem``
    distinct ones per problem (the oracle selection policy, seeded by run.seed)."""
    rng = random.Random(f"control/own/{cfg.run.seed}")
    return [m.TrainExample(problem_id=pid, prompt=problems[pid].prompt, completion=s.text, adapter_version=0)
            for pid, pool in sorted(pools.items())
            for s in select_training_examples(pool, "oracle", cfg.coordinator.per_problem, rng)]


def run_control(cfg: config_mod.Config, control_dir: Path, base_run: Path | None = None,
                console: Console | None = None) -> Trajectory:
    """One seed's controls in ``control_dir`` (or the finished ones read back)
    -> a Trajectory whose round 0 is the base, round 1 the reference-trained
    model and round 2 the on-policy-trained one (absent when the base solved
    none of the control's problems). ``base_run``: a run of the same config
    whose round-0 evaluation is the base's (a study's trajectory), instead of
    sampling it again."""
    control_dir = Path(control_dir).resolve()
    base_store = Path(base_run) if base_run is not None else control_dir / "base"
    for where, arm in ((control_dir, lambda: _run(cfg, control_dir, base_run is None)),
                       (control_dir / ON_POLICY, lambda: _run_on_policy(cfg, control_dir / ON_POLICY))):
        if (where / DONE_FILE).exists():
            continue
        t0 = time.monotonic()
        info = arm()
        info.update(seed=cfg.run.seed, base_from=str(base_store), seconds=round(time.monotonic() - t0, 1))
        (where / DONE_FILE).write_text(json.dumps(info, indent=1))
        if console is not None:
            console.print(f"control seed {cfg.run.seed} ({where.name}): {info['n_examples']} examples, "
                          f"{info['seconds']:.0f}s", highlight=False)
    pools = {0: _eval_pools(base_store), 1: _eval_pools(control_dir)}
    if json.loads((control_dir / ON_POLICY / DONE_FILE).read_text())["n_examples"]:
        pools[2] = _eval_pools(control_dir / ON_POLICY)
    if any(set(p) != set(pools[0]) for p in pools.values()):
        raise StudyError(f"{base_store}: its base evaluation is of other problems than {control_dir}'s "
                         f"(not the same config and seed?)")
    return trajectory_of(cfg.run.seed, control_dir, pools, list(cfg.eval.selection_ks))


def _run(cfg: config_mod.Config, control_dir: Path, sample_base: bool) -> dict:
    """Sample the base (unless given), train on oracle data, sample the trained
    model. The controls drive the coordinator's request loop with a round of
    their own (train, serve), so they reach roles exactly as a run does."""
    with in_process(cfg, control_dir, roles=("generator", "verifier", "trainer")) as coordinator:
        split = load_split(control_dir)
        if sample_base:  # its own store: the same phase name and round, so the same sampling seeds
            (control_dir / "base").mkdir(exist_ok=True)
            base = Coordinator(cfg, control_dir / "base", coordinator.client)
            try:
                base.sample("eval", 0, split.eval, cfg.eval.n_samples)
            finally:
                base.close()
        examples = oracle_examples(cfg, split)
        return _train_and_evaluate(cfg, coordinator, split, examples)


def _run_on_policy(cfg: config_mod.Config, arm: Path) -> dict:
    """The on-policy arm, prepared like a run in ``arm``: sample the control's
    training problems with the base (phase "train", round 1), train on its own
    held-out-correct programs, sample the evaluation."""
    with in_process(cfg, arm, roles=("generator", "verifier", "trainer")) as coordinator:
        split = load_split(arm)
        problems = {p.id: p for p in control_problems(cfg, split)}
        pools = coordinator.sample("train", 1, list(problems.values()), cfg.coordinator.k).pools()
        examples = own_correct_examples(cfg, pools, problems)
        if not examples:  # nothing to train on: the base solved none of the problems
            return {"n_examples": 0, "n_problems": len(problems)}
        return {**_train_and_evaluate(cfg, coordinator, split, examples), "n_problems": len(problems),
                "n_solved": len({e.problem_id for e in examples})}


def _train_and_evaluate(cfg: config_mod.Config, coordinator: Coordinator, split: m.Split,
                        examples: list[m.TrainExample]) -> dict:
    """One training round of the configured trainer on ``examples`` from the
    base, served, then the evaluation sampled as phase "eval" of round 0 (the
    base's sampling seeds: a paired comparison)."""
    coordinator.wait_for_workers()
    wants = coordinator.role_info.get("trainer", {}).get("wants", "examples")
    if wants != "examples":
        raise StudyError(f"the trainer control needs a trainer that wants SFT examples; trainer.impl = "
                         f"{cfg.trainer.impl!r} wants {wants!r}")
    ready = coordinator.request("trainer", m.TrainRequest(request_id="control/train", round=1, examples=examples))
    loaded = coordinator.request("generator", m.LoadAdapter(request_id="control/load", version=ready.version,
                                                             path=ready.path))
    coordinator.served_version, coordinator.served_path = loaded.version, ready.path
    coordinator.sample("eval", 0, split.eval, cfg.eval.n_samples)
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


def trainer_gain(controls: list[Trajectory], n_boot: int, arm: int = 1) -> tuple[float, float, float]:
    """Held-out pass@1 of the model trained in ``arm`` (1: reference programs,
    2: the base's own correct ones) minus the base's -> (estimate, low, high)."""
    def gain(plan):
        return (pass_curve(controls, lambda t: arm, plan, (1,)) - pass_curve(controls, lambda t: 0, plan, (1,)))[0]

    est, lo, hi = bootstrap(gain, [len(t.problems) for t in controls], n_boot)
    return float(est), float(lo), float(hi)


def first_losses(controls: list[Trajectory], where: str) -> list[float]:
    """The trainer's first-step loss of one arm ("." or ON_POLICY) in each
    control that recorded one: how unlikely the arm's data was under the base."""
    out = []
    for t in controls:
        done = Path(t.run_dir) / where / DONE_FILE
        if done.exists():
            loss = json.loads(done.read_text()).get("trainer_metrics", {}).get("loss_first")
            out += [loss] if loss is not None else []
    return out


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
    ks = sorted(controls[0].sel_count[0])
    if not ks:
        raise StudyError("selection control: no k of eval.selection_ks is at most eval.n_samples")
    k = k if k in ks else ks[len(ks) // 2]
    lines, findings, numbers = _trainer_section(controls, n_boot)
    pools = [("control pools (base and trained)", controls, 0)]
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


def _trainer_section(controls: list[Trajectory], n_boot: int) -> tuple[list[str], dict, dict]:
    """The two trainer controls (reference and on-policy data) -> (lines, findings, numbers)."""
    sizes = [len(t.problems) for t in controls]
    arms = [1, 2] if all(2 in t.correct for t in controls) else [1]
    p1 = {r: float(pass_curve(controls, lambda t, r=r: r, identity_plan(sizes), (1,))[0]) for r in [0, *arms]}
    gains = {arm: trainer_gain(controls, n_boot, arm) for arm in arms}
    verdict = {arm: PASSES if gains[arm][1] > 0 else FAILS for arm in arms}
    findings = {"trainer_control": verdict[1]}
    numbers = {"trainer_gain": list(gains[1]), "pass_at_1": {"base": p1[0], "oracle_sft": p1[1]}}
    losses = {arm: first_losses(controls, where) for arm, where in ((1, "."), (2, ON_POLICY))}
    loss = {arm: f"{np.mean(v):.3f}" if v else "n/a" for arm, v in losses.items()}
    lines = ["## Positive controls", "",
             f"Trainer control: the configured trainer, with the budget of a STaR round, trained from the base on "
             f"one round's training problems ({len(controls)} seeds x {sizes[0]} evaluation problems), "
             f"held-out pass@1 of the base {100 * p1[0]:.1f}%:", "",
             "| training data | first-step loss | held-out pass@1 | gain (points) | verdict |", "|---|---|---|---|---|",
             f"| reference programs | {loss[1]} | {100 * p1[1]:.1f}% | {_ci(*gains[1])} | **{verdict[1]}** |"]
    if 2 in gains:
        findings["trainer_control_on_policy"] = verdict[2]
        numbers.update(trainer_gain_on_policy=list(gains[2]), first_loss={"reference": loss[1], "own": loss[2]})
        numbers["pass_at_1"]["own_correct_sft"] = p1[2]
        lines.append(f"| the base's own held-out-correct programs | {loss[2]} | {100 * p1[2]:.1f}% | "
                     f"{_ci(*gains[2])} | **{verdict[2]}** |")
    else:
        lines.append("| the base's own held-out-correct programs | | | not run: the base solved none of the "
                     "control's problems in some seed | |")
    lines.append("")
    if verdict[1] == PASSES:
        return lines, findings, numbers
    if verdict.get(2) == PASSES:
        lines += ["The trainer **can learn at this budget** from the model's own correct programs, but not from the "
                  "task's reference programs: those are off-policy for this model (compare the first-step losses), "
                  "so the reference control understates what a STaR round can do. A null STaR result here is not "
                  "the trainer's.", ""]
    else:
        lines += ["**The trainer cannot learn at this budget**: neither reference programs nor the model's own "
                  "correct ones raise held-out pass@1 with an interval above 0, so a null STaR result of this "
                  "configuration says nothing about self-training. Change the trainer's dose (trainer.lr, "
                  "trainer.max_steps, trainer.epochs) until a control passes.", ""]
    return lines, findings, numbers


def run_controls(preset: str, seeds: int, overrides: list[str], out: Path, console: Console,
                 first_seed: int = 0, n_boot: int = 1000) -> Report:
    """``constellation control``: the controls of seeds first_seed.. in
    ``<out>/seed-<s>``, and their report in ``<out>/report.md``."""
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
