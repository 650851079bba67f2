"""A user's mistake or a broken disk gives one line naming the path and the cause, exit 2,
no traceback, and nothing already stored is lost (issue 11, part 5)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from constellation.protocol import config
from constellation.tasks.jsonl import JsonlTaskError, load
from launch import cli, prepare

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _mount_tmpfs(where: Path, options: str, flags: int = 0) -> None:
    if os.geteuid() != 0 or _libc.mount(b"tmpfs", str(where).encode(), b"tmpfs", flags, options.encode()) != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {os.strerror(ctypes.get_errno())}")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount_tmpfs(where, "size=256k,nr_inodes=64")
    yield where
    _libc.umount2(str(where).encode(), 2)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    text = captured.out + captured.err  # `up` prints on its console (stdout), usage errors on stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    return errors[0]


def test_a_full_disk_is_one_line_and_the_stored_file_survives(tiny_disk, capsys):
    stored = tiny_disk / "run" / "metrics.jsonl"
    stored.parent.mkdir()
    stored.write_text('{"event": "run_start"}\n')
    with open(tiny_disk / "filler", "wb") as f:  # fill the disk
        try:
            f.write(b"0" * (1 << 20))
        except OSError as e:
            assert e.errno == errno.ENOSPC
    code = cli.main(["up", "--preset", "smoke", "--run-dir", str(stored.parent)])
    line = one_error_line(capsys)
    assert code == 2 and str(stored.parent) in line and os.strerror(errno.ENOSPC) in line
    assert stored.read_text() == '{"event": "run_start"}\n'


def test_a_read_only_run_directory_is_one_line_and_keeps_its_files(tmp_path, capsys):
    where = tmp_path / "ro"
    where.mkdir()
    _mount_tmpfs(where, "size=1m")
    try:
        (where / "run").mkdir()
        db = sqlite3.connect(where / "run" / "run.sqlite")  # a store that holds something (no run_end yet)
        db.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY, event TEXT, data TEXT)")
        db.commit()
        db.close()
        stored = (where / "run" / "run.sqlite").read_bytes()
        assert _libc.mount(None, str(where).encode(), None, 32 | 1, None) == 0  # MS_REMOUNT | MS_RDONLY
        code = cli.main(["up", "--preset", "smoke", "--run-dir", str(where / "run")])
        line = one_error_line(capsys)
        assert code == 2 and str(where / "run") in line and os.strerror(errno.EROFS) in line
        assert (where / "run" / "run.sqlite").read_bytes() == stored
    finally:
        _libc.umount2(str(where).encode(), 2)


def test_a_binary_task_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(b'{"question": "1+1?", "answer": "2"}\n\x89PNG\r\n\x1a\n\xff\xfe\x00\x00')
    with pytest.raises(JsonlTaskError, match=r"set\.jsonl:2: not UTF-8"):
        load(path)


def test_a_lone_surrogate_in_a_task_file_is_a_clear_error(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "x\\ud800", "answer": "2"}\n')
    with pytest.raises(JsonlTaskError, match=r"set\.jsonl:1: a lone surrogate"):
        load(path)


def _prepare_with(tmp_path, overrides: list[str], capsys) -> tuple[int, list[str]]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config.to_toml(config.load("smoke", overrides)))
    code = prepare.main([str(run_dir)])
    return code, capsys.readouterr().out.strip().splitlines()


def test_prepare_reports_a_binary_task_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bin.jsonl"
    bad.write_bytes(bytes(range(256)))
    code, out = _prepare_with(tmp_path, ['task.impl="jsonl"', f'task.path="{bad}"'], capsys)
    assert code == 2 and len(out) == 1 and out[0].startswith("ERROR ") and str(bad) in out[0]


def test_prepare_reports_a_missing_model_folder_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code, out = _prepare_with(tmp_path, [f'model.base="{missing}"'], capsys)
    errors = [ln for ln in out if ln.startswith("ERROR ")]
    assert code == 2 and len(errors) == 1 and str(missing) in errors[0]
    assert not any("Traceback" in ln for ln in out)


@pytest.mark.slow
def test_up_with_a_missing_model_prints_one_line_and_exits_2(tmp_path):
    missing = tmp_path / "no-such-model"
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "up",
                           "--preset", "smoke", "--run-dir", str(tmp_path / "run"),
                           "--set", f'model.base="{missing}"'],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    text = proc.stdout + proc.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in text, text
    assert "no-such-model" in errors[0]
