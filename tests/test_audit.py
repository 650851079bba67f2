"""The coordinator's audit of the exact verifier (runtime/audit.py): a verifier
that forges verdicts is caught and the run stops before a forged verdict is
stored; an honest one passes every audit; plugins are not audited by default."""

from __future__ import annotations

import sqlite3

import msgspec

from constellation.protocol import config
from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.runtime.audit import AuditFailed, Auditor, audited, chosen
from constellation.runtime.store import read_events
from test_coordinator import workers
from test_reply_coverage import Doctored, run_with_deadline


def all_pass(req: m.VerifyRequest, reply: m.Verdicts) -> m.Verdicts:
    """A forging verifier: every candidate passes, and is held-out correct."""
    return msgspec.structs.replace(reply, items=[msgspec.structs.replace(v, status="pass", heldout_correct=True,
                                                                         visible_passed=v.visible_total)
                                                 for v in reply.items])


def test_a_forging_verifier_is_caught_and_the_run_stops_before_any_pass_at_k(tmp_path):
    roles = workers(tmp_path)
    roles["verifier"] = Doctored(roles["verifier"], m.VerifyRequest, all_pass, times=10**6)
    counters, raised = run_with_deadline(tmp_path, roles)
    assert isinstance(raised, AuditFailed), raised
    assert "re-verified in the coordinator it is ('fail'" in str(raised) or "it is ('parse_error'" in str(raised), raised
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    # verdicts not picked for the audit are stored until one picked is found forged (1 in 20 is picked):
    # the run stopped long before its 160 verdicts, and with no pass@k
    assert stored < 80, stored
    assert not [e for e in read_events(tmp_path) if isinstance(e, ev.Eval)]


def test_an_honest_verifier_passes_its_audit_and_the_count_is_kept(tmp_path):
    counters, raised = run_with_deadline(tmp_path, workers(tmp_path))
    assert raised is None
    assert counters["audited"] > 0 and "audit_ms" in counters


def test_the_audit_is_on_for_built_in_exact_verifiers_only_and_picks_the_same_candidates_each_time():
    assert audited(config.load("smoke")) and config.load("smoke").verifier.audit == 0.05
    assert not audited(config.load("smoke", ['verifier.impl="tests.doctored_roles:EmptyFirstVerifier"']))
    assert audited(config.load("smoke", ['verifier.impl="tests.doctored_roles:EmptyFirstVerifier"',
                                         "verifier.audit_plugins=true"]))
    assert not audited(config.load("smoke", ["verifier.audit=0"]))
    assert Auditor.from_config(config.load("smoke", ["verifier.audit=0"]), "/nonexistent") is None
    ids = [f"eval/0/p{i}/{j}" for i in range(200) for j in range(8)]
    share = sum(chosen(i, 0.05) for i in ids) / len(ids)
    assert 0.03 < share < 0.07 and [chosen(i, 0.05) for i in ids] == [chosen(i, 0.05) for i in ids]
