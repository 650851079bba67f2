"""The real coordinator loop, in this process, through InProcessRoleClient.

The generator, critic and trainer are small stand-ins with known behaviour (no
model), the verifier is the real DSL verifier: every count below follows from
the stand-ins, so the tests assert exact numbers in a second."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from constellation.protocol import config
from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.runtime.client import InProcessRoleClient
from constellation.runtime.coordinator import Coordinator, CoordinatorError
from constellation.runtime.store import read_events, save_split
from constellation.tasks.dsl import make_split
from roles.verifier_dsl import DslVerifier

SETTINGS = ["run.rounds=2", "task.n_labeled=4", "task.n_train=24", "task.n_eval=6", "task.depths=[1]",
            "eval.n_samples=4", "eval.ks=[1,2,4]", "eval.selection_k=2", "eval.selection_ks=[2,4]",
            "coordinator.problems_per_round=8", "coordinator.k=4", "coordinator.request_problems=3",
            "guard.val_problems=4", "guard.val_samples=2"]


class StandIn:
    """What the client needs of a role besides handle()."""

    def setup(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class HalfRightGenerator(StandIn):
    """Candidate i of a problem is its reference program for even i, junk for odd i."""

    def __init__(self) -> None:
        self.version, self.requests = 0, 0

    def handle(self, msg: Any) -> Any:
        if isinstance(msg, m.LoadAdapter):
            self.version = msg.version
            return m.AdapterLoaded(request_id=msg.request_id, version=msg.version)
        self.requests += 1
        items = [m.Candidate(id=f"{msg.candidate_prefix}/{p.id}/{i}", problem_id=p.id, logprob=-1.0,
                             text=p.reference if i % 2 == 0 else "nonsense(", adapter_version=self.version)
                 for p in msg.problems for i in range(msg.k)]
        return m.Candidates(request_id=msg.request_id, items=items)


class ConstantCritic(StandIn):
    def __init__(self) -> None:
        self.trained_on: list[int] = []

    def handle(self, msg: Any) -> Any:
        if isinstance(msg, m.ScoreRequest):
            return m.Scores(request_id=msg.request_id, candidate_ids=[i.candidate_id for i in msg.items],
                            scores=[0.5] * len(msg.items))
        self.trained_on.append(len(msg.labels))
        return m.CriticTrained(request_id=msg.request_id, round=msg.round, version=msg.round)


class RecordingTrainer(StandIn):
    """Declares the data it wants in READY, as roles/trainer.py does, and records what it got."""

    def __init__(self, wants: str) -> None:
        self.wants, self.received = wants, []

    def setup(self) -> dict[str, Any]:
        return {"wants": self.wants}

    def handle(self, msg: m.TrainRequest) -> m.AdapterReady:
        self.received.append((len(msg.examples), len(msg.pairs)))
        return m.AdapterReady(request_id=msg.request_id, version=msg.round, path="")


class FailingVerifier(StandIn):
    def handle(self, msg: Any) -> Any:
        raise RuntimeError("verifier broke")


def run(tmp_path: Path, workers: dict[str, Any], *sets: str) -> tuple[Path, list[ev.Event]]:
    cfg = config.load("smoke", [*SETTINGS, *sets])
    save_split(tmp_path, make_split(cfg.task, cfg.task_seed()))
    client = InProcessRoleClient(workers).start()
    coordinator = Coordinator(cfg, tmp_path, client)
    try:
        assert coordinator.run() is True
    finally:
        coordinator.close()
        client.close()
    return tmp_path, read_events(tmp_path)


def workers(cfg_dir: Path, wants: str = "examples") -> dict[str, Any]:
    cfg = config.load("smoke", SETTINGS)
    return {"generator": HalfRightGenerator(), "verifier": DslVerifier(cfg, cfg_dir),
            "critic": ConstantCritic(), "trainer": RecordingTrainer(wants)}


def test_a_star_run_in_process_counts_every_candidate_once(tmp_path):
    roles = workers(tmp_path)
    run_dir, events = run(tmp_path, roles)
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert [e.model for e in evals] == ["base", "round-1", "round-2"]
    # half the samples are the reference program: held-out correct for every problem
    assert all(e.pass_at_k["1"] == 0.5 and e.pass_at_k["4"] == 1.0 for e in evals)
    ends = [e for e in events if isinstance(e, ev.RoundEnd)]
    assert [(e.n_candidates, e.n_visible_pass, e.n_selected) for e in ends] == [(32, 16, 8), (32, 16, 8)]
    # STaR accumulates: round 2 trains on both rounds' selections (duplicates of a program counted once)
    assert roles["trainer"].received[0] == (8, 0) and roles["trainer"].received[1][0] >= 8
    db = sqlite3.connect(run_dir / "run.sqlite")
    # eval 6 x 4 three times, train 8 x 4 twice, validation 4 x 2 three times
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 72 + 64 + 24
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 160
    assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 160
    # the critic trains on the train phase's labels only; a candidate that did not run has none
    assert roles["critic"].trained_on == [16, 16]


def test_a_trainer_that_wants_pairs_gets_pairs_and_no_examples(tmp_path):
    roles = workers(tmp_path, wants="pairs")
    _, events = run(tmp_path, roles, 'pairs.source="verifier"')
    assert all(n_examples == 0 and n_pairs > 0 for n_examples, n_pairs in roles["trainer"].received)
    assert [e.n_pairs for e in events if isinstance(e, ev.Trainer)] == [n for _, n in roles["trainer"].received]


def test_a_trainer_that_wants_something_unknown_stops_the_run_with_its_name(tmp_path):
    with pytest.raises(CoordinatorError, match="'rows'"):
        run(tmp_path, workers(tmp_path, wants="rows"))


def test_a_role_that_fails_every_request_ends_in_a_coordinator_error_not_a_hang(tmp_path):
    roles = {**workers(tmp_path), "verifier": FailingVerifier()}
    with pytest.raises(CoordinatorError, match="verifier failed request .* 3 times: RuntimeError: verifier broke"):
        run(tmp_path, roles)


def test_a_resumed_run_reads_what_it_recorded_and_samples_nothing_again(tmp_path):
    run(tmp_path, workers(tmp_path))
    again = workers(tmp_path)
    _, events = run(tmp_path, again)
    assert again["generator"].requests == 0
    assert sum(isinstance(e, ev.RunStart) and e.resumed for e in events) == 1


# ---------------------------------------------------------------------------
# coordinator.overlap = "one_step"
# ---------------------------------------------------------------------------
class LoggingGenerator(HalfRightGenerator):
    """Also logs (kind, phase prefix or version) of every request into a shared list."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.log = log

    def handle(self, msg: Any) -> Any:
        self.log.append(("load", str(msg.version)) if isinstance(msg, m.LoadAdapter)
                        else ("generate", msg.candidate_prefix))
        return super().handle(msg)


class LoggingTrainer(RecordingTrainer):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__("examples")
        self.log, self.versions = log, []

    def handle(self, msg: m.TrainRequest) -> m.AdapterReady:
        self.log.append(("train", str(msg.round)))
        self.versions.append(sorted({e.adapter_version for e in msg.examples}))
        return super().handle(msg)


def overlapped(tmp_path: Path, *sets: str) -> tuple[dict[str, Any], list[tuple[str, str]], list[ev.Event]]:
    log: list[tuple[str, str]] = []
    roles = {**workers(tmp_path), "generator": LoggingGenerator(log), "trainer": LoggingTrainer(log)}
    _, events = run(tmp_path, roles, "run.rounds=3", 'coordinator.overlap="one_step"', *sets)
    return roles, log, events


def adapter_versions(run_dir: Path) -> dict[str, list[int]]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT phase || '/' || round, adapter_version FROM candidates GROUP BY 1, 2 ORDER BY 1, 2")
    out: dict[str, list[int]] = {}
    for phase, version in rows:
        out.setdefault(phase, []).append(version)
    return out


def test_one_step_trains_on_candidates_of_adapter_r_minus_1_and_evaluates_adapter_r(tmp_path):
    roles, _, events = overlapped(tmp_path)
    # train/r+1 is sampled while round r trains, with the adapter served then (r-1)
    assert adapter_versions(tmp_path) == {
        "train/1": [0], "train/2": [0], "train/3": [1],
        "eval/0": [0], "eval/1": [1], "eval/2": [2], "eval/3": [3],
        "val/0": [0], "val/1": [1], "val/2": [2], "val/3": [3]}
    assert [e.adapter_version for e in events if isinstance(e, ev.Eval)] == [0, 1, 2, 3]
    ends = [e for e in events if isinstance(e, ev.RoundEnd)]
    assert [(e.train_adapter_version, e.staleness) for e in ends] == [(0, 0.0), (0, 1.0), (1, 1.0)]
    # the examples carry the version that sampled them (STaR accumulates: round 3 has rounds 1-3's)
    assert roles["trainer"].versions == [[0], [0], [0, 1]]


def test_one_step_overlaps_the_trainer_with_evaluation_and_the_next_training_phase(tmp_path):
    _, log, _ = overlapped(tmp_path)
    kinds = [(kind, what.split("/")[0] + "/" + what.split("/")[1] if kind == "generate" else what)
             for kind, what in log]
    order = list(dict.fromkeys(kinds))  # first occurrence of each step
    # while round 2 trains: evaluate and guard round 1, sample round 3's training phase; then serve adapter 2
    at = order.index(("train", "2"))
    assert order[at:at + 5] == [("train", "2"), ("generate", "eval/1"), ("generate", "val/1"),
                                ("generate", "train/3"), ("load", "2")]
    assert order.index(("generate", "train/2")) < order.index(("load", "1"))


def test_one_step_counts_every_candidate_once_like_none(tmp_path):
    for name in ("one_step", "none"):
        (tmp_path / name).mkdir()
    _, _, events = overlapped(tmp_path / "one_step")
    _, none_events = run(tmp_path / "none", workers(tmp_path / "none"), "run.rounds=3")
    for run_dir in (tmp_path / "one_step", tmp_path / "none"):
        db = sqlite3.connect(run_dir / "run.sqlite")
        assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == 4 * 24 + 3 * 32 + 4 * 8
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 4 * 24 + 3 * 32 + 4 * 8
    assert ([e.pass_at_k for e in events if isinstance(e, ev.Eval)]
            == [e.pass_at_k for e in none_events if isinstance(e, ev.Eval)])
    ledger = events[-1]
    assert isinstance(ledger, ev.RunEnd) and set(ledger.waited_seconds) >= {"generator", "verifier", "trainer"}


def test_a_resumed_one_step_run_samples_nothing_again(tmp_path):
    overlapped(tmp_path)
    roles, log, events = overlapped(tmp_path)
    assert [kind for kind, _ in log if kind != "load"] == []
    assert sum(isinstance(e, ev.RunStart) and e.resumed for e in events) == 1


class VersionedCritic(ConstantCritic):
    """Scores carry the critic's version: the round of the last labels it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def handle(self, msg: Any) -> Any:
        reply = super().handle(msg)
        if isinstance(reply, m.CriticTrained):
            self.version = reply.version
            return reply
        return m.Scores(request_id=reply.request_id, candidate_ids=reply.candidate_ids, scores=reply.scores,
                        critic_version=self.version)


def critic_versions(run_dir: Path) -> dict[str, list[int]]:
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT c.phase || '/' || c.round, s.critic_version FROM scores s JOIN candidates c "
                      "ON c.id = s.candidate_id GROUP BY 1, 2 ORDER BY 1, 2")
    out: dict[str, list[int]] = {}
    for phase, version in rows:
        out.setdefault(phase, []).append(version)
    return out


def test_one_step_scores_every_phase_with_the_critic_version_none_uses(tmp_path):
    # one_step samples phases without waiting for their scores; the critic still
    # scores each phase before it trains on the next round's labels, as under none
    for name in ("one_step", "none"):
        (tmp_path / name).mkdir()
    roles = {**workers(tmp_path / "one_step"), "critic": VersionedCritic()}
    run(tmp_path / "one_step", roles, "run.rounds=3", 'coordinator.overlap="one_step"')
    run(tmp_path / "none", {**workers(tmp_path / "none"), "critic": VersionedCritic()}, "run.rounds=3")
    expected = {"eval/0": [0], "val/0": [0], "train/1": [0], "eval/1": [1], "val/1": [1], "train/2": [1],
                "eval/2": [2], "val/2": [2], "train/3": [2], "eval/3": [3], "val/3": [3]}
    assert critic_versions(tmp_path / "none") == expected
    assert critic_versions(tmp_path / "one_step") == expected
