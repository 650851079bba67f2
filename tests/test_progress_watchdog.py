"""The supervisor's progress watchdog: a coordinator whose loop turns but that
handles no reply is restarted after a bound that grows with the requests in
flight (launch/supervisor.py: Supervisor._stalled, progress_bound)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from constellation.protocol import config
from constellation.runtime.requests import MAX_TIMEOUTS
from launch.supervisor import RoleProc, Supervisor, progress_bound

CFG = config.load("smoke", ["supervisor.progress_timeout=100", "coordinator.request_timeout=10"])


def watch(beats: list[tuple[float, dict]]) -> list[str]:
    """Feed heartbeats (time, coordinator stats) to the watchdog -> its verdict after each."""
    rp, sup = RoleProc("coordinator", Path("/nonexistent.log")), SimpleNamespace(cfg=CFG)
    out = []
    for now, stats in beats:
        rp.stats = stats
        out.append(Supervisor._stalled(sup, rp, now))
    return out


def test_the_bound_grows_by_the_request_loops_give_up_time_when_requests_are_in_flight():
    assert progress_bound(CFG, 0) == 100
    assert progress_bound(CFG, 3) == 100 + 10 * (MAX_TIMEOUTS + 1)


def test_no_handled_reply_past_the_bound_is_a_stall_with_its_reason():
    verdicts = watch([(0, {"progress": 5, "pending": 0}), (50, {"progress": 5, "pending": 0}),
                      (101, {"progress": 5, "pending": 0})])
    assert verdicts[:2] == ["", ""]
    assert "has handled no reply for 101s (0 requests in flight; bound 100s)" in verdicts[2]


def test_progress_resets_the_clock_and_requests_in_flight_extend_it():
    assert watch([(0, {"progress": 1, "pending": 2}), (90, {"progress": 2, "pending": 2}),
                  (185, {"progress": 2, "pending": 2})]) == ["", "", ""]  # 95 s since the last reply, bound 160
    assert watch([(0, {"progress": 1, "pending": 2}), (161, {"progress": 1, "pending": 2})])[1] != ""


def test_a_role_that_reports_no_progress_count_is_never_stalled():
    assert watch([(0, {"loop_age": 1.0}), (10**6, {"loop_age": 1.0})]) == ["", ""]
