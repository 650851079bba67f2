"""End to end: `constellation up --preset smoke` with all five role processes.

These start real processes over real sockets and train real (tiny) models.
The base model is built once per session into a shared cache directory.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from constellation.runtime.store import read_events
from smoke_run import up_smoke

pytestmark = pytest.mark.slow

ROLES = ("coordinator", "generator", "verifier", "critic", "trainer")


def _up_cmd(runs: Path, cache: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke",
           "--set", f'run.runs_dir="{runs}"', "--set", f'model.cache_dir="{cache}"']
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run_dir(runs: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dirs = [d for d in runs.glob("*") if d.is_dir()]
        if dirs:
            return dirs[0]
        time.sleep(0.2)
    raise AssertionError(f"no run directory appeared in {runs}")




def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _assert_every_candidate_accounted_for(run_dir: Path) -> dict[str, int]:
    cfg_text = (run_dir / "config.toml").read_text()
    assert 'critic' in cfg_text
    db = sqlite3.connect(run_dir / "run.sqlite")
    n_cand = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    n_unverified = db.execute(
        "SELECT COUNT(*) FROM candidates c LEFT JOIN verdicts v ON v.candidate_id = c.id WHERE v.candidate_id IS NULL"
    ).fetchone()[0]
    n_unscored = db.execute(
        "SELECT COUNT(*) FROM candidates c LEFT JOIN scores s ON s.candidate_id = c.id WHERE s.candidate_id IS NULL"
    ).fetchone()[0]
    per_phase = dict(db.execute("SELECT phase || '/' || round, COUNT(*) FROM candidates GROUP BY phase, round"))
    db.close()
    assert n_cand > 0 and n_unverified == 0 and n_unscored == 0, (n_cand, n_unverified, n_unscored)
    return per_phase


@pytest.mark.parametrize("transport,critic", [("ipc", "small"), ("tcp", "policy_head")])
def test_up_smoke_runs_all_five_roles_and_writes_metrics(tmp_path, model_cache, transport, critic):
    runs = tmp_path / "runs"
    proc = subprocess.run(_up_cmd(runs, model_cache, f'run.transport="{transport}"', f'critic.impl="{critic}"'),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = _run_dir(runs)
    events = read_events(run_dir)
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert [e.model for e in evals] == ["base", "round-1"]
    for e in evals:
        assert set(e.pass_at_k) == {"1", "2", "4", "8"}
        assert all(0.0 <= v <= 1.0 for v in e.pass_at_k.values())
        assert e.pass_at_k["1"] <= e.pass_at_k["8"]
        assert set(e.selection_accuracy) == {"best_of_k", "critic", "majority", "critic_vote", "oracle"}
        # every policy at every k of eval.selection_ks, on the same candidates
        assert set(e.selection) == {"2", "4", "8"}
        assert e.selection["4"]["all"]["n_groups"] == 6 * 2
    critic = [e for e in events if isinstance(e, ev.Critic)]
    assert [e.round for e in critic] == [1] and critic[0].metrics["n_train"] > 0  # auroc only with both labels
    guard = [e for e in events if isinstance(e, ev.Guard)]
    assert [e.round for e in guard] == [0, 1] and all(e.n_problems == 6 for e in guard)
    assert any(isinstance(e, ev.Zpd) for e in events)
    assert any(isinstance(e, ev.Crossover) for e in events)
    assert isinstance(events[-1], ev.RunEnd) and events[-1].ok
    # five separate processes, each with its own log
    pids = {name: role["pid"] for name, role in _status(run_dir)["roles"].items()}
    assert set(pids) == set(ROLES) and len(set(pids.values())) == 5
    assert os.getpid() not in pids.values()
    for name in ROLES:
        assert (run_dir / "logs" / f"{name}.log").stat().st_size > 0
    assert not any(_alive(pid) for pid in pids.values())
    # every candidate verified and scored; exact counts per phase
    per_phase = _assert_every_candidate_accounted_for(run_dir)
    assert per_phase == {"eval/0": 6 * 8, "val/0": 6 * 4, "train/1": 12 * 4, "eval/1": 6 * 8, "val/1": 6 * 4}
    assert (run_dir / "adapters" / "v1" / "adapter_config.json").exists()
    assert json.loads((run_dir / "endpoints.json").read_text())["hub"].startswith(f"{transport}://")
    assert "pass@k by round" in proc.stdout


def _kill_mid_train_phase(runs: Path, model_cache: Path, role: str) -> tuple[Path, int, str]:
    """Run smoke with a slowed generator, kill -9 ``role`` while generate
    requests of round 1 are in flight, let the run finish."""
    # a generator swapped in by import path, slowed so the kill lands mid-phase
    return _kill_during(runs, model_cache, role, ["coordinator.problems_per_round=30",
                                                  'generator.impl="tests.slow_roles:SlowGenerator"'], round=1)


def _kill_during(runs: Path, model_cache: Path, role: str, sets: list[str], round: int) -> tuple[Path, int, str]:
    """Kill -9 ``role`` once round ``round``'s training phase has some but not
    all of its candidates, let the run finish -> (run dir, victim pid, output)."""
    proc = subprocess.Popen(_up_cmd(runs, model_cache, *sets), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        run_dir = _run_dir(runs)
        deadline = time.monotonic() + 300
        victim = None
        while time.monotonic() < deadline and victim is None:
            if any(isinstance(e, ev.Progress) and e.phase == "train" and e.round == round and 0 < e.candidates < 60
                   for e in read_events(run_dir)):
                victim = _status(run_dir)["roles"][role]["pid"]
            time.sleep(0.2)
        assert victim, f"round {round}'s training phase never started"
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    return run_dir, victim, out


@pytest.mark.parametrize("role", ["generator", "verifier", "critic"])
def test_kill_9_of_a_worker_mid_round_is_restarted_and_nothing_is_lost(tmp_path, model_cache, role):
    run_dir, victim, _ = _kill_mid_train_phase(tmp_path / "runs", model_cache, role)
    status = _status(run_dir)["roles"][role]
    assert status["restarts"] == 1 and status["pid"] != victim
    restarts = [e for e in read_events(run_dir) if isinstance(e, ev.RoleRestart)]
    assert [e.role for e in restarts] == [role]
    per_phase = _assert_every_candidate_accounted_for(run_dir)
    assert per_phase == {"eval/0": 6 * 8, "val/0": 6 * 4, "train/1": 30 * 4, "eval/1": 6 * 8,
                         "val/1": 6 * 4}


def test_kill_9_of_the_coordinator_resumes_from_the_run_store(tmp_path, model_cache):
    run_dir, victim, _ = _kill_mid_train_phase(tmp_path / "runs", model_cache, "coordinator")
    assert _status(run_dir)["roles"]["coordinator"]["restarts"] == 1
    events = read_events(run_dir)
    assert [e.resumed for e in events if isinstance(e, ev.RunStart)] == [False, True]
    # the base was evaluated once, round 1 trained and evaluated once
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]
    per_phase = _assert_every_candidate_accounted_for(run_dir)
    assert per_phase == {"eval/0": 6 * 8, "val/0": 6 * 4, "train/1": 30 * 4, "eval/1": 6 * 8,
                         "val/1": 6 * 4}


def test_sigterm_shuts_everything_down_without_orphans(tmp_path, model_cache):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_up_cmd(runs, model_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = _run_dir(runs)
        deadline = time.monotonic() + 300
        pids = {}
        while time.monotonic() < deadline:
            roles = _status(run_dir).get("roles", {})
            if roles and all(r["state"] not in ("starting",) for r in roles.values()):
                pids = {n: r["pid"] for n, r in roles.items()}
                break
            time.sleep(0.2)
        assert len(pids) == 5, _status(run_dir)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    time.sleep(0.5)
    assert [n for n, pid in pids.items() if _alive(pid)] == []


def test_role_that_cannot_start_is_named_in_the_error(tmp_path, model_cache):
    runs = tmp_path / "runs"
    proc = subprocess.run(_up_cmd(runs, model_cache, 'critic.impl="no_such_pkg.mod:Critic"'),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "role 'critic' failed to start" in proc.stdout
    assert "no_such_pkg" in proc.stdout


def test_up_without_a_critic_starts_four_processes_and_selects_without_scores(tmp_path, model_cache):
    run_dir, events = up_smoke(tmp_path, model_cache, 'critic.impl="none"')
    assert set(_status(run_dir)["roles"]) == set(ROLES) - {"critic"}
    assert not (run_dir / "logs" / "critic.log").exists()
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert [e.model for e in evals] == ["base", "round-1"]
    assert all(set(e.selection_accuracy) == {"best_of_k", "majority", "oracle"} for e in evals)
    assert not any(isinstance(e, ev.Critic) for e in events)
    db = sqlite3.connect(run_dir / "run.sqlite")
    assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == db.execute(
        "SELECT COUNT(*) FROM candidates").fetchone()[0] > 0


def _phase_versions(run_dir: Path) -> dict[str, set[int]]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    out: dict[str, set[int]] = {}
    for phase, version in db.execute("SELECT DISTINCT phase || '/' || round, adapter_version FROM candidates"):
        out.setdefault(phase, set()).add(version)
    db.close()
    return out


@pytest.mark.parametrize("role", ["generator", "trainer", "critic"])
def test_kill_9_during_an_overlapped_round_loses_and_duplicates_nothing(tmp_path, model_cache, role):
    """coordinator.overlap = "one_step", 2 rounds: kill -9 ``role`` while round 1
    trains and round 2's training phase is sampled with adapter 0."""
    run_dir, _, _ = _kill_during(tmp_path / "runs", model_cache, role, [
        "run.rounds=2", 'coordinator.overlap="one_step"', "coordinator.problems_per_round=30",
        'generator.impl="tests.slow_roles:SlowGenerator"', 'trainer.impl="tests.slow_roles:SlowTrainer"'], round=2)
    assert _status(run_dir)["roles"][role]["restarts"] == 1
    events = read_events(run_dir)
    assert [e.role for e in events if isinstance(e, ev.RoleRestart)] == [role]
    # every round trained, served and evaluated once
    assert [e.round for e in events if isinstance(e, ev.Trainer)] == [1, 2]
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1", "round-2"]
    assert _assert_every_candidate_accounted_for(run_dir) == {
        "eval/0": 6 * 8, "val/0": 6 * 4, "train/1": 30 * 4, "train/2": 30 * 4, "eval/1": 6 * 8, "val/1": 6 * 4,
        "eval/2": 6 * 8, "val/2": 6 * 4}
    # training candidates one adapter behind, evaluation on the round's own adapter
    versions = _phase_versions(run_dir)
    assert versions["train/1"] == versions["train/2"] == {0}
    assert versions["eval/1"] == versions["val/1"] == {1} and versions["eval/2"] == versions["val/2"] == {2}


def test_full_fine_tuning_round_trains_a_step_budget_and_serves_full_weights(tmp_path, model_cache):
    # trainer.lora = false: the trainer saves full weights, the hf generator serves them for round 1
    run_dir, events = up_smoke(tmp_path, model_cache, 'critic.impl="none"', "trainer.lora=false",
                               "trainer.max_steps=3", "trainer.max_seconds=0", "trainer.lr=1e-4")
    trained = [e for e in events if isinstance(e, ev.Trainer)]
    assert [e.round for e in trained] == [1] and trained[0].metrics["steps"] == 3
    v1 = run_dir / "adapters" / "v1"
    assert (v1 / "config.json").exists() and not (v1 / "adapter_config.json").exists()
    db = sqlite3.connect(run_dir / "run.sqlite")
    versions = dict(db.execute("SELECT phase || '/' || round, MAX(adapter_version) FROM candidates "
                               "GROUP BY phase, round"))
    assert versions["eval/1"] == 1 and versions["eval/0"] == 0
