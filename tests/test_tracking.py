"""Tracking: the events of a run, in TensorBoard (read back with TensorBoard's
own EventAccumulator), W&B offline and MLflow's file store, live and rebuilt
by ``constellation export``.

The run is the real coordinator with test_coordinator's stand-in roles (no
model); its trainer stand-in returns a known per-step curve."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.runtime.store import stored_events
from constellation.runtime.tracking import Tracker, Tracks
from constellation.runtime.tracking_backends import TENSORBOARD_DIR
from launch import cli
from test_coordinator import RecordingTrainer, run, workers

STEPS = 5  # steps per round of the curve trainer


class CurveTrainer(RecordingTrainer):
    """Answers each round with a curve of STEPS steps: loss 1/step, lr 0.1, grad norm 2."""

    def handle(self, msg: m.TrainRequest) -> m.AdapterReady:
        reply = super().handle(msg)
        curve = [m.StepPoint(s, 1.0 / s, 0.1, 2.0) for s in range(1, STEPS + 1)]
        return m.AdapterReady(request_id=reply.request_id, version=reply.version, path="",
                              metrics={"steps": float(STEPS), "loss_last": 1.0 / STEPS}, curve=curve)


def tracked_run(tmp_path: Path, *sets: str) -> tuple[Path, list[ev.Event]]:
    roles = workers(tmp_path)
    roles["trainer"] = CurveTrainer("examples")
    return run(tmp_path, roles, *sets)


def accumulator(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {s.step: s.value for s in acc.Scalars(tag)}


def check_against_store(run_dir: Path) -> None:
    """The event files hold the store's numbers: pass@k, the selection table, k*, the curves."""
    acc = accumulator(run_dir)
    events = stored_events(run_dir)
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert len(evals) == 3  # base + 2 rounds
    for k in evals[0].pass_at_k:
        assert scalars(acc, f"eval/pass_at_k/{k}") == pytest.approx({e.round: e.pass_at_k[k] for e in evals})
    k, group, policies = next((k, g, p) for k, groups in evals[-1].selection.items() for g, p in groups.items() if p)
    policy, value = next((pol, v) for pol, v in policies.items() if v is not None)
    assert scalars(acc, f"eval/selection/k{k}/{group}/{policy}")[2] == pytest.approx(value)
    trainers = [e for e in events if isinstance(e, ev.Trainer)]
    assert sorted(scalars(acc, "trainer/loss")) == list(range(1, STEPS * len(trainers) + 1))
    assert scalars(acc, "trainer/lr")[STEPS + 1] == pytest.approx(0.1)
    assert len(acc.Images("eval/pass_at_k_curve")) == 2  # one per round
    guards = [e for e in events if isinstance(e, ev.Guard)]
    assert scalars(acc, "guard/val_pass_at_1") == pytest.approx({e.round: e.val_pass_at_1 for e in guards})
    throughput = scalars(acc, "generator/candidates_per_second/eval") if \
        "generator/candidates_per_second/eval" in acc.Tags()["scalars"] else {}
    assert all(v > 0 for v in throughput.values())


def test_a_run_writes_tensorboard_files_that_match_its_store(tmp_path):
    run_dir, _ = tracked_run(tmp_path)
    check_against_store(run_dir)


def test_export_rebuilds_the_same_logs_from_run_sqlite(tmp_path, capsys):
    run_dir, _ = tracked_run(tmp_path, "tracking.tensorboard=false")
    assert not (run_dir / TENSORBOARD_DIR).exists()
    assert cli.main(["export", "--tensorboard", str(run_dir)]) == 0
    check_against_store(run_dir)
    assert cli.main(["export", "--tensorboard", str(run_dir)]) == 0  # again: replaced, not doubled
    assert len(accumulator(run_dir).Scalars("trainer/loss")) == STEPS * 2


def test_export_of_a_folder_without_runs_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["export", "--tensorboard", str(tmp_path)]) == 2


def test_a_resumed_tracker_continues_the_step_axis():
    curve = [m.StepPoint(s, 1.0, 0.1, 1.0) for s in (1, 2, 3)]
    first = ev.Trainer(round=1, version=1, path="", n_examples=1, n_pairs=0, curve=curve)
    second = ev.Trainer(round=2, version=2, path="", n_examples=1, n_pairs=0, curve=curve)
    points = Tracker([], history=[first]).tracks.points(second)
    assert sorted(p.step for p in points if p.tag == "trainer/loss") == [4, 5, 6]


def test_a_failing_backend_is_dropped_and_the_run_goes_on():
    class Broken:
        def write(self, points: list[Any], flush: bool = True) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    tracker = Tracker([Broken()])
    tracker(ev.Crossover(round=1, k_star=4))
    assert tracker.backends == []


def test_throughput_is_candidates_per_second_of_a_phase():
    tracks = Tracks()
    for t, cands in ((10.0, 8), (12.0, 28)):
        tracks.points(ev.Progress(time=t, round=1, phase="train", done=cands, total=40, candidates=cands,
                                  scored=0, pending=1, queued=0))
    (point,) = tracks.points(ev.RoundEnd(round=1, n_problems=1, n_candidates=28, n_visible_pass=0, n_selected=0,
                                         n_train_examples=0))[:1]
    assert point.tag == "generator/candidates_per_second/train" and point.value == pytest.approx(10.0)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_logs_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir, _ = tracked_run(tmp_path, "tracking.tensorboard=false", "tracking.wandb=true")
    files = list((run_dir / "wandb").rglob("*.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0


@pytest.mark.slow  # the sqlite store migrates its schema first: ~10 s of CPU
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_sqlite_store_holds_the_pass_at_k(tmp_path):
    from mlflow import MlflowClient

    run_dir, events = tracked_run(tmp_path, "tracking.tensorboard=false", "tracking.mlflow=true")
    client = MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').absolute()}")
    (found,) = client.search_runs([client.get_experiment_by_name("constellation").experiment_id])
    history = client.get_metric_history(found.info.run_id, "eval/pass_at_k/1")
    evals = [e for e in events if isinstance(e, ev.Eval)]
    assert {h.step: h.value for h in history} == pytest.approx({e.round: e.pass_at_k["1"] for e in evals})
