import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from launch.monitor import load, monitor, render
from constellation.runtime.store import read_event_lines as read_events

NOW = 1_700_000_000.0


def to_text(run_dir: Path, now: float = NOW) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(run_dir, now=now))
    return console.export_text()


def eval_event(round_, model, curve, selection, t):
    return {"event": "eval", "time": t, "round": round_, "model": model,
            "adapter_version": round_, "n_problems": 40, "n_samples": 64,
            "pass_at_k": {str(k): v for k, v in curve.items()}, "selection_k": 8,
            "selection_accuracy": selection}


BASE_CURVE = {1: 0.31, 2: 0.42, 4: 0.55, 8: 0.66, 16: 0.77, 64: 0.9}
ROUND1_CURVE = {1: 0.47, 2: 0.55, 4: 0.61, 8: 0.68, 16: 0.74, 64: 0.81}
SELECTION = {"best_of_k": 0.52, "critic": 0.58, "majority": 0.55, "critic_vote": 0.6,
             "oracle": 0.66}


def write_run(run_dir: Path, *, finished=False, truncated_tail=True, heartbeat_age=1.0):
    events = [
        {"event": "run_start", "time": NOW - 125, "run_dir": str(run_dir), "preset": "smoke"},
        eval_event(0, "base", BASE_CURVE, SELECTION, NOW - 120),
        {"event": "progress", "time": NOW - 100, "round": 1, "phase": "generate",
         "done": 640, "total": 640},
        {"event": "round_end", "time": NOW - 60, "round": 1, "n_problems": 40,
         "n_candidates": 2560, "n_visible_pass": 913, "n_train_examples": 187, "seconds": 44.5},
        {"event": "trainer", "time": NOW - 50, "round": 1, "loss_first": 1.234,
         "loss_last": 0.567, "steps": 60, "seconds": 9.5},
        {"event": "critic", "time": NOW - 45, "round": 1, "auroc": 0.812, "ece": 0.043,
         "n_train": 2000},
        eval_event(1, "round-1", ROUND1_CURVE, dict(SELECTION, critic=0.71), NOW - 20),
        {"event": "crossover", "time": NOW - 19, "round": 1, "k_star": 16},
        {"event": "progress", "time": NOW - 5, "round": 2, "phase": "verify",
         "done": 150, "total": 600},
    ]
    if finished:
        events.append({"event": "run_end", "time": NOW - 2, "ok": True})
    lines = "".join(json.dumps(e) + "\n" for e in events)
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
    events, bad = read_events(run_dir / "metrics.jsonl")
    assert len(events) == 9 and bad == 0


def test_read_events_counts_bad_complete_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"event": "run_start"}\nnot json\n[1, 2]\n')
    events, bad = read_events(tmp_path / "metrics.jsonl")
    assert len(events) == 1 and bad == 2


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


def test_render_shows_elapsed_and_preset(run_dir):
    text = to_text(run_dir)
    assert "preset smoke" in text and "elapsed 2m05s" in text


def test_render_empty_run_dir_does_not_crash(tmp_path):
    text = to_text(tmp_path / "not-yet-created")
    assert "waiting for metrics.jsonl" in text
    assert "no status.json yet" in text


def test_render_tolerates_junk_field_types(tmp_path):
    bad_eval = {"event": "eval", "round": "one", "model": "base", "pass_at_k": {"x": "y", "1": None},
                "selection_accuracy": [1, 2]}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(bad_eval) + "\n")
    (tmp_path / "status.json").write_text(json.dumps({"roles": {"generator": "oops"}}))
    assert "generator" in to_text(tmp_path)


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
