"""Exact verification of math answers: does a model's final answer equal the gold answer?

    from verifiers.math import check_answer, extract_answer, MathChecker
    check_answer("1/3", "so the answer is $\\frac{1}{3}$.")   # MathVerdict(verdict="correct", ...)

- ``extract_answer(text)``: the final answer in a solution text (extract.py).
- ``check_answer(gold, pred_text, timeout=1.0) -> MathVerdict``: decided in an
  isolated worker process with a hard deadline (checker.py).
- ``MathChecker(workers, timeout)``: a pool of warm workers for throughput.

The equality conventions are in equivalence.py and normalize.py. Importing this
package does not import sympy; only the worker processes do.
"""

from verifiers.math.checker import MathChecker, MathCheckerError, MathVerdict, check_answer
from verifiers.math.extract import extract_answer

__all__ = ["MathChecker", "MathCheckerError", "MathVerdict", "check_answer", "extract_answer"]
