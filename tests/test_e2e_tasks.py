"""End to end on the other tasks: arithmetic with STaR rationalization, and the
JSONL code task with the sandboxed code verifier (`constellation up --preset smoke`
plus overrides, all five role processes, a real tiny model)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from smoke_run import up_smoke

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARITHMETIC = ['task.impl="arithmetic"', 'verifier.impl="arithmetic"', "coordinator.rationalize=true",
              "task.depths=[1,2]", "task.labeled_max_depth=2", "task.n_labeled=2000", "model.warm_start_seconds=40",
              "sampling.max_new_tokens=180", "coordinator.k=2", "coordinator.problems_per_round=30"]


def up(tmp_path: Path, cache: Path, *sets: str) -> tuple[Path, list[ev.Event]]:
    return up_smoke(tmp_path, cache, *sets, timeout=600)


def rationale_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    """(selected problem id, its prompt, the candidate's problem id) of rationalized selections."""
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT s.problem_id, p.prompt, c.problem_id FROM selections s "
                      "JOIN candidates c ON c.id = s.candidate_id JOIN problems p ON p.id = s.problem_id "
                      "WHERE c.phase = 'rationalize'").fetchall()
    db.close()
    return rows


def test_arithmetic_with_rationalization_counts_attempts_and_rationales(tmp_path, model_cache):
    run_dir, events = up(tmp_path, model_cache, *ARITHMETIC)
    assert [e.enabled for e in events if isinstance(e, ev.Rationalize)] == [True]
    [end] = [e for e in events if isinstance(e, ev.RoundEnd)]
    assert end.n_rationalize_attempts > 0  # a 40 s model fails some 2-digit problems
    assert end.n_rationalized == len(rationale_rows(run_dir))
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]


def test_rationales_are_trained_on_without_the_hint(tmp_path, model_cache):
    run_dir, events = up(tmp_path, model_cache, *ARITHMETIC, 'generator.impl="tests.slow_roles:HintReadingGenerator"')
    [end] = [e for e in events if isinstance(e, ev.RoundEnd)]
    rows = rationale_rows(run_dir)
    # the hint-reading generator answers every hinted prompt correctly: every attempt is kept
    assert end.n_rationalized == end.n_rationalize_attempts == len(rows) > 0
    for pid, prompt, cand_pid in rows:
        assert cand_pid == pid + "#hint" and "(" not in prompt and prompt.startswith("Q: ")
    [trainer] = [e for e in events if isinstance(e, ev.Trainer)]
    assert trainer.n_examples == end.n_train_examples >= end.n_rationalized


def test_jsonl_code_task_completes_and_reports(tmp_path, model_cache):
    run_dir, events = up(tmp_path, model_cache, 'task.impl="jsonl"', f'task.path="{ROOT / "examples" / "code.jsonl"}"',
                         'verifier.impl="code"', "task.n_eval=4", "task.n_train=6", "task.n_labeled=6",
                         "coordinator.problems_per_round=6", "verifier.code_timeout=2.0",
                         "coordinator.rationalize=true", "guard.val_problems=2")
    assert [e.enabled for e in events if isinstance(e, ev.Rationalize)] == [False]  # code has no answer to hint
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert [e.model for e in evals] == ["base", "round-1"]
    assert all(0.0 <= v <= 1.0 for e in evals for v in e.pass_at_k.values())
    db = sqlite3.connect(run_dir / "run.sqlite")
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM verdicts GROUP BY status").fetchall())
    # eval: 4 problems x 8 samples, twice; train: the 4 problems left after the
    # 2 validation ones, x 4; validation: 2 x 4, twice
    assert sum(statuses.values()) == 4 * 8 * 2 + 4 * 4 + 2 * 4 * 2 and set(statuses) <= {"pass", "fail", "timeout", "crash", "memory"}


def test_jsonl_math_task_with_the_math_verifier_completes(tmp_path, model_cache):
    run_dir, events = up(tmp_path, model_cache, 'task.impl="jsonl"', f'task.path="{ROOT / "examples" / "math.jsonl"}"',
                         'verifier.impl="math"', "task.n_eval=4", "task.n_train=5", "task.n_labeled=3",
                         "guard.val_problems=2", "coordinator.rationalize=true")
    assert [e.enabled for e in events if isinstance(e, ev.Rationalize)] == [True]  # math answers can be hinted
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]
    db = sqlite3.connect(run_dir / "run.sqlite")
    # the math verifier decided every candidate with one of its typed verdicts. Only
    # kinds are asserted: which kind a candidate of a briefly trained model gets (and
    # the error text a timeout under load appends to the detail) is not the point here
    statuses = {s for (s,) in db.execute("SELECT status FROM verdicts")}
    kinds = {d.partition(":")[0] for (d,) in db.execute("SELECT detail FROM verdicts")}
    assert statuses and statuses <= {"pass", "fail", "parse_error", "timeout"}
    assert kinds <= {"correct", "incorrect", "no_answer", "parse_error", "timeout"}
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == db.execute(
        "SELECT COUNT(*) FROM candidates").fetchone()[0]
