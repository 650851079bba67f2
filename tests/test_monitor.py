import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from constellation.protocol import events as ev
from constellation.runtime.store import read_event_lines
from launch.console import ConsoleView
from launch.monitor import load, monitor, render

NOW = 1_700_000_000.0


def to_text(run_dir: Path, now: float = NOW) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(run_dir, now=now))
    return console.export_text()


def eval_event(round_, model, curve, selection, t):
    return ev.Eval(time=t, round=round_, model=model, adapter_version=round_, n_problems=40, n_samples=64,
                   pass_at_k={str(k): v for k, v in curve.items()}, selection_k=8, selection_accuracy=selection,
                   n_agree=30)


BASE_CURVE = {1: 0.31, 2: 0.42, 4: 0.55, 8: 0.66, 16: 0.77, 64: 0.9}
ROUND1_CURVE = {1: 0.47, 2: 0.55, 4: 0.61, 8: 0.68, 16: 0.74, 64: 0.81}
SELECTION = {"best_of_k": 0.52, "critic": 0.58, "majority": 0.55, "critic_vote": 0.6,
             "oracle": 0.66}


def write_run(run_dir: Path, *, finished=False, truncated_tail=True, heartbeat_age=1.0):
    events = [
        ev.RunStart(time=NOW - 125, run_dir=str(run_dir), rounds=2, seed=7, resumed=False),
        eval_event(0, "base", BASE_CURVE, SELECTION, NOW - 120),
        ev.Progress(time=NOW - 100, round=1, phase="train", done=640, total=640, candidates=640, scored=640,
                    pending=0, queued=0),
        ev.RoundEnd(time=NOW - 60, round=1, n_problems=40, n_candidates=2560, n_visible_pass=913,
                    n_selected=187, n_train_examples=187, seconds=44.5),
        ev.Trainer(time=NOW - 50, round=1, version=1, path="adapters/v1", n_examples=187, n_pairs=0,
                   metrics={"loss_first": 1.234, "loss_last": 0.567, "steps": 60, "seconds": 9.5}),
        ev.Critic(time=NOW - 45, round=1, version=1, metrics={"auroc": 0.812, "ece": 0.043, "n_train": 2000}),
        eval_event(1, "round-1", ROUND1_CURVE, dict(SELECTION, critic=0.71), NOW - 20),
        ev.Crossover(time=NOW - 19, round=1, k_star=16),
        ev.Progress(time=NOW - 5, round=2, phase="verify", done=150, total=600, candidates=160, scored=150,
                    pending=3, queued=0),
    ]
    if finished:
        events.append(ev.RunEnd(time=NOW - 2, ok=True))
    lines = "".join(ev.encode_event(e).decode() + "\n" for e in events)
    if truncated_tail:
        lines += '{"event": "progress", "time": 17000'  # the writer is mid-line
    (run_dir / "metrics.jsonl").write_text(lines)
    status = {"updated": NOW - 0.5, "roles": {
        "generator": {"pid": 4242, "state": "busy", "restarts": 0, "queue_depth": 2,
                      "stats": {"per_second": 55.0, "done": 640.0}, "last_heartbeat": NOW - heartbeat_age},
        "verifier": {"pid": 4343, "state": "idle", "restarts": 2, "queue_depth": 0,
                     "stats": {}, "last_heartbeat": NOW - 30.0},
    }}
    (run_dir / "status.json").write_text(json.dumps(status))


@pytest.fixture
def run_dir(tmp_path):
    write_run(tmp_path)
    return tmp_path


def test_read_events_skips_truncated_last_line(run_dir):
    events, bad = read_event_lines(run_dir / "metrics.jsonl")
    assert len(events) == 9 and bad == 0
    assert isinstance(events[0], ev.RunStart) and isinstance(events[-1], ev.Progress)


def test_read_events_counts_bad_complete_lines(tmp_path):
    start = ev.encode_event(ev.RunStart(run_dir=str(tmp_path), rounds=1, seed=0, resumed=False)).decode()
    junk = ['not json', '[1, 2]', '{"event": "run_start"}', '{"event": "no_such_kind", "round": 1}']
    (tmp_path / "metrics.jsonl").write_text("\n".join([start, *junk]) + "\n")
    events, bad = read_event_lines(tmp_path / "metrics.jsonl")
    assert len(events) == 1 and bad == 4


def test_render_shows_passk_curves_and_delta(run_dir):
    text = to_text(run_dir)
    assert "0.310" in text and "0.470" in text and "+0.160" in text  # k=1
    assert "-0.090" in text  # k=64: base ahead


def test_render_shows_crossover(run_dir):
    assert "k* (crossover): 16" in to_text(run_dir)


def test_render_computes_crossover_without_event(tmp_path):
    write_run(tmp_path)
    path = tmp_path / "metrics.jsonl"
    kept = [line for line in path.read_text().splitlines() if '"crossover"' not in line]
    path.write_text("\n".join(kept) + "\n")
    assert "k* (crossover): 16" in to_text(tmp_path)  # 0.77 >= 0.74 at k=16


def test_render_shows_selection_accuracy_per_round(run_dir):
    text = to_text(run_dir)
    assert "0.710" in text  # round-1 critic selection accuracy
    assert "round-1" in text


def test_render_shows_training_numbers(run_dir):
    text = to_text(run_dir)
    assert "2560" in text and "913" in text and "187" in text
    assert "1.234→0.567" in text
    assert "0.812" in text


def test_render_shows_roles(run_dir):
    text = to_text(run_dir)
    assert "4242" in text and "busy" in text
    assert "55.0/s, 640 done" in text


def test_render_flags_stale_heartbeat(run_dir):
    lines = to_text(run_dir).splitlines()
    verifier = next(line for line in lines if "verifier" in line)
    generator = next(line for line in lines if "generator" in line)
    assert "STALE" in verifier
    assert "STALE" not in generator


def test_render_no_stale_flag_after_run_end(tmp_path):
    write_run(tmp_path, finished=True)
    text = to_text(tmp_path)
    assert "STALE" not in text
    assert "finished ok" in text


def test_render_shows_current_phase_progress(run_dir):
    text = to_text(run_dir)
    assert "verify" in text and "150/600" in text and "25%" in text


def test_render_shows_elapsed_and_run_start(run_dir):
    text = to_text(run_dir)
    assert "seed 7, 2 rounds" in text and "elapsed 2m05s" in text


def test_render_empty_run_dir_does_not_crash(tmp_path):
    text = to_text(tmp_path / "not-yet-created")
    assert "waiting for metrics.jsonl" in text
    assert "no status.json yet" in text


def test_render_counts_junk_field_types_as_bad_lines(tmp_path):
    bad_eval = {"event": "eval", "round": "one", "model": "base", "pass_at_k": {"x": "y", "1": None},
                "selection_accuracy": [1, 2]}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(bad_eval) + "\n")
    (tmp_path / "status.json").write_text(json.dumps({"roles": {"generator": "oops"}}))
    text = to_text(tmp_path)
    assert "generator" in text and "1 unreadable lines" in text


def test_load_sees_run_end(tmp_path):
    write_run(tmp_path, finished=True)
    assert load(tmp_path).ended


def test_monitor_once_prints_a_frame(run_dir, capsys):
    monitor(run_dir, once=True)
    assert "k* (crossover): 16" in capsys.readouterr().out


def test_monitor_returns_when_run_has_ended(tmp_path, capsys):
    write_run(tmp_path, finished=True)
    monitor(tmp_path, refresh=0.01)  # would loop forever if run_end were missed
    assert "finished ok" in capsys.readouterr().out


def test_render_shows_guard_readings_and_early_stop(tmp_path):
    write_run(tmp_path, truncated_tail=False)
    guard = ev.Guard(time=NOW - 3, round=1, val_pass_at_1=0.35, diversity=0.62, critic_mean=None, n_problems=20,
                     n_samples=4, stop=True, reason="val pass@1 fell twice", falls=2, diversity_ratio=0.9,
                     best_round=0)
    stop = ev.EarlyStop(time=NOW - 2, round=1, reason="val pass@1 fell twice", best_round=0, rounds_skipped=1)
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(ev.encode_event(guard) + b"\n" + ev.encode_event(stop) + b"\n")
    text = to_text(tmp_path)
    assert "0.350" in text and "0.62" in text
    assert "EARLY STOP after round 1: val pass@1 fell twice (1 rounds skipped)" in text


# -- the console of `constellation up` reads the same events ---------------------


def test_console_prints_one_line_per_finished_step_and_the_table(run_dir):
    console = Console(record=True, width=200, file=io.StringIO())
    view = ConsoleView(run_dir, console)
    view.poll()
    view.poll()  # nothing new: nothing printed twice
    view.final_table()
    text = console.export_text()
    assert text.count("eval base: pass@1 31.0%  pass@8 66.0%  pass@64 90.0%") == 1
    assert "round 1: 2560 candidates, 913 visible-pass, 187 training examples" in text
    assert "round 1 trainer: adapter v1, loss 1.234 -> 0.567 in 10s" in text
    assert "round 1 critic: held-out AUROC 0.812" in text
    assert "round 1: crossover k* = 16" in text
    assert "round-1" in text and "47.0%" in text  # the pass@k table
