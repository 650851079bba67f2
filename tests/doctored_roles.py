"""Real roles that answer their first few requests with a reply that does not
cover them, loaded by import path (``verifier.impl = "tests.doctored_roles:EmptyFirstVerifier"``):
stand-ins for a buggy plugin, for tests/test_e2e_replies.py."""

import msgspec

from constellation.protocol import messages as m
from roles.critic_small import SmallCritic
from roles.generator_hf import HfGenerator
from roles.verifier_dsl import DslVerifier

DOCTORED = 3  # requests of each role answered badly, then honestly


class EmptyFirstVerifier(DslVerifier):
    """An empty Verdicts for its first requests (today's hang on main)."""

    doctored = 0

    def handle(self, msg):
        reply = super().handle(msg)
        if isinstance(msg, m.VerifyRequest) and type(self).doctored < DOCTORED:
            type(self).doctored += 1
            return msgspec.structs.replace(reply, items=[])
        return reply


class HalfFirstGenerator(HfGenerator):
    """Half the candidates it was asked for, for its first requests."""

    doctored = 0

    def handle(self, msg):
        reply = super().handle(msg)
        if isinstance(msg, m.GenerateRequest) and type(self).doctored < DOCTORED:
            type(self).doctored += 1
            return msgspec.structs.replace(reply, items=reply.items[:len(reply.items) // 2])
        return reply


class StrangerFirstCritic(SmallCritic):
    """A score for a candidate of no phase, for its first requests."""

    doctored = 0

    def handle(self, msg):
        reply = super().handle(msg)
        if isinstance(msg, m.ScoreRequest) and reply.candidate_ids and type(self).doctored < DOCTORED:
            type(self).doctored += 1
            return msgspec.structs.replace(reply, candidate_ids=["eval/99/nowhere/0", *reply.candidate_ids[1:]])
        return reply
