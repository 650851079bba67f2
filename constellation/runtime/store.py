"""The run store: SQLite (WAL mode) plus the metrics.jsonl event log.

Only the coordinator writes. Readers (the monitor, reports, tests) open their
own read-only connections; WAL lets them read while rounds are written.

Every insert of a work result is ``INSERT OR IGNORE`` keyed by its id, so a
result delivered twice (a request re-sent after a role restart) is stored once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, TypeVar

import msgspec

from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.algorithms.selection import Sample
from constellation.runtime.phase import pools_of

E = TypeVar("E", bound=ev.Event)

SCHEMA = """
CREATE TABLE IF NOT EXISTS problems (
    id TEXT PRIMARY KEY, split TEXT NOT NULL, task TEXT NOT NULL, difficulty INTEGER,
    prompt TEXT NOT NULL, data TEXT NOT NULL, reference TEXT);
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, phase TEXT NOT NULL, problem_id TEXT NOT NULL,
    text TEXT NOT NULL, logprob REAL, adapter_version INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS candidates_round ON candidates (round, phase, problem_id);
CREATE TABLE IF NOT EXISTS verdicts (
    candidate_id TEXT PRIMARY KEY, status TEXT NOT NULL, visible_passed INTEGER, visible_total INTEGER,
    heldout_correct INTEGER, heldout_outputs TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS scores (
    candidate_id TEXT PRIMARY KEY, score REAL NOT NULL, critic_version INTEGER);
CREATE TABLE IF NOT EXISTS selections (
    round INTEGER NOT NULL, policy TEXT NOT NULL, problem_id TEXT NOT NULL, candidate_id TEXT NOT NULL,
    PRIMARY KEY (round, policy, problem_id, candidate_id));
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, status TEXT NOT NULL, started REAL, finished REAL,
    adapter_version INTEGER, adapter_path TEXT);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, round INTEGER, event TEXT NOT NULL,
    data TEXT NOT NULL);
"""


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        conn = sqlite3.connect(path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = sqlite3.Row
    return conn


class RunStore:
    def __init__(self, run_dir: str | Path, sinks: Iterable[Any] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.conn = connect(self.run_dir / "run.sqlite")
        self.conn.executescript(SCHEMA)
        self._events = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        # callables fed every event once it is written, with close(): the trackers (runtime/tracking.py)
        self.sinks = [s for s in sinks if s is not None]

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.conn.commit()
        self.conn.close()
        self._events.close()

    # -- events -----------------------------------------------------------
    def event(self, event: ev.Event) -> ev.Event:
        """Append one event to metrics.jsonl (line-buffered, so a reader sees
        whole lines) and to the metrics table. -> the event as written (timed)."""
        event = ev.stamp(event)
        line = ev.encode_event(event).decode()
        self._events.write(line + "\n")
        self.conn.execute("INSERT INTO metrics (time, round, event, data) VALUES (?, ?, ?, ?)",
                          (event.time, event.round, ev.kind_of(event), line))
        self.conn.commit()
        for sink in self.sinks:
            sink(event)
        return event

    # -- problems ----------------------------------------------------------
    def add_problems(self, split: str, problems: Iterable[m.Problem]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(p.id, split, p.task, p.difficulty, p.prompt, json.dumps(p.data), p.reference) for p in problems])
        self.conn.commit()

    # -- work results (idempotent) ----------------------------------------
    def add_candidates(self, round: int, phase: str, items: Iterable[m.Candidate]) -> int:
        cur = self.conn.executemany(
            "INSERT OR IGNORE INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(c.id, round, phase, c.problem_id, c.text, c.logprob, c.adapter_version) for c in items])
        self.conn.commit()
        return cur.rowcount

    def add_verdicts(self, items: Iterable[m.Verdict]) -> int:
        cur = self.conn.executemany(
            "INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(v.candidate_id, v.status, v.visible_passed, v.visible_total,
              None if v.heldout_correct is None else int(v.heldout_correct),
              None if v.heldout_outputs is None else json.dumps(v.heldout_outputs), v.detail) for v in items])
        self.conn.commit()
        return cur.rowcount

    def add_scores(self, candidate_ids: list[str], scores: list[float], critic_version: int) -> int:
        cur = self.conn.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?)",
                                    [(c, s, critic_version) for c, s in zip(candidate_ids, scores)])
        self.conn.commit()
        return cur.rowcount

    def add_selections(self, round: int, policy: str, rows: Iterable[tuple[str, str]]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO selections VALUES (?, ?, ?, ?)",
                              [(round, policy, pid, cid) for pid, cid in rows])
        self.conn.commit()

    def selected_examples(self, rounds: list[int], policy: str) -> list[tuple[str, str, str, int]]:
        """(problem_id, prompt, completion, adapter version that sampled it) of the selections of these rounds."""
        if not rounds:
            return []
        marks = ",".join("?" * len(rounds))
        rows = self.conn.execute(
            f"SELECT s.problem_id, p.prompt, c.text, c.adapter_version FROM selections s JOIN candidates c ON c.id = s.candidate_id "
            f"JOIN problems p ON p.id = s.problem_id WHERE s.round IN ({marks}) AND s.policy = ? "
            f"ORDER BY s.round, s.problem_id, s.candidate_id", (*rounds, policy))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def set_round(self, round: int, status: str, adapter_version: int | None = None,
                  adapter_path: str | None = None) -> None:
        now = time.time()
        self.conn.execute(
            "INSERT INTO rounds (round, status, started) VALUES (?, ?, ?) "
            "ON CONFLICT(round) DO UPDATE SET status = excluded.status, "
            "finished = CASE WHEN excluded.status = 'done' THEN ? ELSE finished END, "
            "adapter_version = COALESCE(?, adapter_version), adapter_path = COALESCE(?, adapter_path)",
            (round, status, now, now, adapter_version, adapter_path))
        self.conn.commit()


    # -- resume (a restarted coordinator continues where its predecessor stopped)
    def round_status(self) -> dict[int, tuple[str, int | None, str | None]]:
        rows = self.conn.execute("SELECT round, status, adapter_version, adapter_path FROM rounds")
        return {r["round"]: (r["status"], r["adapter_version"], r["adapter_path"]) for r in rows}

    def last_event(self, kind: type[E], round: int) -> E | None:
        """The newest event of this kind and round (a resumed coordinator replays it)."""
        tag = kind.__struct_config__.tag
        row = self.conn.execute("SELECT data FROM metrics WHERE event = ? AND round = ? ORDER BY id DESC LIMIT 1",
                                (tag, round)).fetchone()
        return None if row is None else ev.decode_event(row["data"])

    def load_phase(self, round: int, phase: str) -> tuple[list[m.Candidate], list[m.Verdict], dict[str, float]]:
        """Everything already recorded for one phase of one round."""
        return load_phase(self.conn, round, phase)


def load_phase(conn: sqlite3.Connection, round: int, phase: str
               ) -> tuple[list[m.Candidate], list[m.Verdict], dict[str, float]]:
    """(candidates, verdicts, scores) recorded for one phase of one round."""
    cands = [m.Candidate(id=r["id"], problem_id=r["problem_id"], text=r["text"], logprob=r["logprob"],
                         adapter_version=r["adapter_version"])
             for r in conn.execute("SELECT * FROM candidates WHERE round = ? AND phase = ?", (round, phase))]
    verdicts = [m.Verdict(candidate_id=r["candidate_id"], problem_id=r["problem_id"], status=r["status"],
                          visible_passed=r["visible_passed"], visible_total=r["visible_total"],
                          heldout_correct=None if r["heldout_correct"] is None else bool(r["heldout_correct"]),
                          heldout_outputs=None if r["heldout_outputs"] is None else json.loads(r["heldout_outputs"]),
                          detail=r["detail"] or "")
                for r in conn.execute(
                    "SELECT v.*, c.problem_id FROM verdicts v JOIN candidates c ON c.id = v.candidate_id "
                    "WHERE c.round = ? AND c.phase = ?", (round, phase))]
    scores = {r["candidate_id"]: r["score"] for r in conn.execute(
        "SELECT s.* FROM scores s JOIN candidates c ON c.id = s.candidate_id WHERE c.round = ? AND c.phase = ?",
        (round, phase))}
    return cands, verdicts, scores


def read_pools(conn: sqlite3.Connection, round: int, phase: str) -> dict[str, list[Sample]]:
    """One round's phase as the coordinator saw it: problem id -> its verified
    candidates as Samples, in sampling order (runtime.phase.pools_of)."""
    cands, verdicts, scores = load_phase(conn, round, phase)
    return pools_of(cands, {v.candidate_id: v for v in verdicts}, scores)


SPLIT_FILE = "split.msgpack"


def save_split(run_dir: str | Path, split: Any) -> None:
    """Saved once by launch/prepare.py and read by the coordinator (making a split
    of thousands of problems takes seconds). ``split`` is an ``m.Split`` or, from a
    plugin task, anything with ``labeled``, ``train`` and ``eval`` lists."""
    data = m.Split(labeled=list(split.labeled), train=list(split.train), eval=list(split.eval))
    (Path(run_dir) / SPLIT_FILE).write_bytes(msgspec.msgpack.encode(data))


def load_split(run_dir: str | Path) -> m.Split:
    path = Path(run_dir) / SPLIT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the task split is made before the roles start "
                                f"(python -m launch.prepare {run_dir})")
    return msgspec.msgpack.decode(path.read_bytes(), type=m.Split)


def finished_run(run_dir: str | Path) -> ev.RunEnd | None:
    """The run_end event of a run that has finished, or None (no run yet, or
    one that stopped before its end): resuming a finished run changes nothing."""
    path = Path(run_dir) / "run.sqlite"
    if not path.exists():
        return None
    conn = connect(path, readonly=True)
    try:
        row = conn.execute("SELECT data FROM metrics WHERE event = 'run_end' ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # a store made before its first event has no metrics table yet
        row = None
    finally:
        conn.close()
    return None if row is None else ev.decode_event(row["data"])


def read_event_lines(path: Path) -> tuple[list[ev.Event], int]:
    """Events of a JSON-lines file and the count of bad lines (not an event of a
    known kind). A last line without its newline may still be being written: it
    is skipped silently unless it already decodes."""
    try:
        raw = path.read_bytes()
    except OSError:
        return [], 0
    lines = raw.split(b"\n")
    events, bad = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(ev.decode_event(line))
        except ev.BadEvent:
            bad += i < len(lines) - 1  # a complete line that is not an event
    return events, bad


def stored_events(run_dir: str | Path) -> list[ev.Event]:
    """Every event of run.sqlite's metrics table, in the order written (what
    ``constellation export`` replays); a row that does not decode is skipped."""
    conn = connect(Path(run_dir) / "run.sqlite", readonly=True)
    try:
        rows = conn.execute("SELECT data FROM metrics ORDER BY id").fetchall()
    finally:
        conn.close()
    events = []
    for row in rows:
        try:
            events.append(ev.decode_event(row["data"]))
        except ev.BadEvent:
            continue
    return events


def read_events(run_dir: str | Path) -> list[ev.Event]:
    """All complete events of a run's metrics.jsonl."""
    return read_event_lines(Path(run_dir) / "metrics.jsonl")[0]
