"""Role implementations for tests, loaded by import path
(``generator.impl = "tests.slow_roles:SlowGenerator"``)."""

import time

from roles.generator_hf import HfGenerator
from roles.trainer_star import StarTrainer


class SlowGenerator(HfGenerator):
    """The real generator, slowed so a test can kill it mid-request."""

    def handle(self, msg):
        time.sleep(0.4)
        return super().handle(msg)


class HintReadingGenerator(HfGenerator):
    """The real generator, except that a prompt carrying an arithmetic hint
    ("Q: 12+34 (46)") is answered with the reference scratchpad: a stand-in for
    a model that has learned to use hints, so a test can count rationales
    deterministically. Unhinted prompts are sampled by the real model."""

    def handle(self, msg):
        import re

        from constellation.protocol.messages import Candidate, Candidates, GenerateRequest
        from constellation.tasks.arithmetic import scratchpad

        reply = super().handle(msg)
        if not isinstance(msg, GenerateRequest):
            return reply
        hinted = {}
        for p in msg.problems:
            m = re.fullmatch(r"Q: (\d+)([+*])(\d+) \(\d+\)\n", p.prompt)
            if m:
                hinted[p.id] = scratchpad(int(m[1]), m[2], int(m[3]))
        items = [Candidate(id=c.id, problem_id=c.problem_id, text=hinted[c.problem_id], logprob=c.logprob,
                           adapter_version=c.adapter_version) if c.problem_id in hinted else c
                 for c in reply.items]
        return Candidates(request_id=reply.request_id, items=items, seconds=reply.seconds)


class SlowTrainer(StarTrainer):
    """The real STaR trainer, slowed so a test can kill it while it trains."""

    def handle(self, msg):
        time.sleep(8.0)
        return super().handle(msg)
