"""Audit the exact verifier: re-verify a share of its verdicts inside the coordinator.

    Auditor.from_config(cfg, run_dir) -> an Auditor, or None when the audit is off
    auditor.check(problem, candidates, verdicts) -> raises AuditFailed on a forged verdict

A verifier's verdicts decide what is trained on and what pass@k says, and
they arrive on a socket. An exact verifier is deterministic and cheap, so the
coordinator can check it: for ``verifier.audit`` of all candidates (chosen by
a hash of the candidate id, so the same ones in every run), it runs the
configured verifier implementation itself, in its own process, and compares
status, visible examples passed, held-out correctness and held-out outputs.
A mismatch ends the run with both verdicts named: a verifier whose key was
stolen, or a buggy one, cannot forge pass@k unseen.

On by default for the built-in exact verifiers (dsl, math, code,
arithmetic); a plugin or the "reward" verifier (which runs user code) is
audited only with ``verifier.audit_plugins = true``. A verdict decided by a
resource limit (timeout, crash, memory) on either side is not a mismatch: on
a loaded machine the same program may run out of time once and not the next.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Any

from constellation.protocol import messages as m
from constellation.protocol.config import Config
from constellation.runtime.registry import entries, resolve_role
from constellation.runtime.requests import RequestFailed

log = logging.getLogger("coordinator")

EXACT_BUILTINS = frozenset({"dsl", "math", "code", "arithmetic"})
RESOURCE_LIMITED = frozenset({"timeout", "crash", "memory"})


class AuditFailed(RequestFailed):
    """A verdict the coordinator's own re-verification contradicts: the run ends."""


def audited(cfg: Config) -> bool:
    impl = cfg.verifier.impl
    builtin = impl in EXACT_BUILTINS and impl in entries("verifier") and entries("verifier")[impl].builtin
    return cfg.verifier.audit > 0 and (builtin or cfg.verifier.audit_plugins)


def chosen(candidate_id: str, share: float) -> bool:
    return zlib.crc32(candidate_id.encode()) % 100_000 < share * 100_000


def _fields(v: m.Verdict) -> tuple:
    return v.status, v.visible_passed, v.visible_total, v.heldout_correct, v.heldout_outputs


class Auditor:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg, self.run_dir, self.share = cfg, Path(run_dir), cfg.verifier.audit
        self.verifier: Any = None  # made at the first audit: the coordinator starts no faster for it
        self.audited = 0
        self.seconds = 0.0

    @classmethod
    def from_config(cls, cfg: Config, run_dir: Path) -> Auditor | None:
        return cls(cfg, run_dir) if audited(cfg) else None

    def check(self, problem: m.Problem, candidates: dict[str, m.Candidate], verdicts: list[m.Verdict]) -> None:
        picked = [v for v in verdicts if chosen(v.candidate_id, self.share)]
        if not picked:
            return
        t0 = time.perf_counter()
        if self.verifier is None:
            self.verifier = resolve_role("verifier", self.cfg.verifier.impl)(self.cfg, self.run_dir)
            self.verifier.setup()
        req = m.VerifyRequest(request_id="audit", problem=problem, candidates=[candidates[v.candidate_id] for v in picked])
        mine = {v.candidate_id: v for v in self.verifier.handle(req).items}
        self.seconds += time.perf_counter() - t0
        self.audited += len(picked)
        for theirs in picked:
            own = mine.get(theirs.candidate_id)
            if own is None or own.status in RESOURCE_LIMITED or theirs.status in RESOURCE_LIMITED:
                continue
            if _fields(own) != _fields(theirs):
                raise AuditFailed(f"the verifier's verdict on {theirs.candidate_id} is {_fields(theirs)}, "
                                  f"re-verified in the coordinator it is {_fields(own)} "
                                  f"(status, visible passed, visible total, held-out correct, held-out outputs): "
                                  f"a forged or buggy verdict; the run stops")

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()
