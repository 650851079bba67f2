"""verifier.impl = "math_verify": Hugging Face math-verify in the math verifier's isolated workers.

The same role as "math" (roles/verifier_math.py: one Verdict per candidate,
the same status mapping, a hard deadline per candidate of
``verifier.math_timeout`` with the worker killed after it, ``math_workers``
workers in parallel), with math-verify as the judge
(verifiers/math_verify.py) instead of the sympy checker, so pass rates
compare with published math-verify numbers.

Before judging, each candidate is cut to the part the task's extraction rule
names (``Problem.data["extract"]``, set by the "hf" task from
``task.extract``; verifiers/completion.py); a candidate where the rule finds
nothing is judged as an empty text, i.e. "no_answer". "full" (or no rule)
hands the whole completion to math-verify, which finds the answer itself.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import msgspec

from constellation.protocol.messages import VerifyRequest
from roles.verifier_math import MathVerifier


class MathVerifyVerifier(MathVerifier):
    """Final math answers against Problem.reference, judged by math-verify in isolated workers."""

    def setup(self) -> dict[str, Any]:
        from verifiers.math import MathChecker
        from verifiers.math_verify import INSTALL_HINT, JUDGE

        if importlib.util.find_spec("math_verify") is None:
            raise ImportError(INSTALL_HINT)
        self.checker = MathChecker(workers=self.workers, timeout=self.timeout, judge=JUDGE)
        self.checker.warm_up()
        return {"task": "math", "judge": "math_verify", "timeout": self.timeout, "workers": self.workers}

    def handle(self, msg: VerifyRequest) -> Any:
        from verifiers.completion import extract

        rule = msg.problem.data.get("extract", "full") if isinstance(msg, VerifyRequest) else "full"
        if rule != "full":
            cut = [msgspec.structs.replace(c, text=extract(rule, c.text) or "") for c in msg.candidates]
            msg = msgspec.structs.replace(msg, candidates=cut)
        return super().handle(msg)
