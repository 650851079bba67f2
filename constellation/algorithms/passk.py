"""pass@k: the chance that at least one of k samples solves a problem.

With n samples per problem of which c are correct, the unbiased estimator
(Chen et al. 2021, "Evaluating Large Language Models Trained on Code") is

    pass@k = 1 - C(n - c, k) / C(n, k)

i.e. one minus the chance that k samples drawn without replacement from the n
are all wrong. The binomials overflow floats for n in the hundreds, so we use
the equivalent product

    C(n - c, k) / C(n, k) = prod_{i = n-c+1 .. n} (1 - k / i)

whose factors are all in [0, 1): no huge numbers, no cancellation.

The self-training question this module answers is the *crossover*: training
on self-selected samples sharpens the distribution, so pass@1 rises, but it can
also narrow it, so at large k the base model may solve as much or more.
``crossover`` finds the smallest k where that happens (k*).

Conventions:
  * "correct" means whatever the caller counts in c; for constellation that is
    held-out correct (the verifier's ``heldout_correct``).
  * k must satisfy 1 <= k <= n: pass@k is not defined from fewer than k
    samples, so ``pass_at_k`` raises rather than silently capping k to n.
"""

from __future__ import annotations

import math

# two pass@k values closer than this count as equal (float noise of the product)
TIE_EPSILON = 1e-12


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct.

    Raises ValueError unless 0 <= c <= n and 1 <= k <= n."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: need n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(
            f"pass_at_k: need 1 <= k <= n, got k={k}, n={n} "
            "(pass@k is undefined with fewer than k samples)")
    if n - c < k:
        # fewer than k wrong samples: every draw of k contains a correct one
        return 1.0
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def mean_pass_at_k(counts: list[tuple[int, int]], ks: list[int]) -> dict[int, float]:
    """Mean pass@k over problems, for each k in ``ks``.

    ``counts`` holds one (n, c) per problem. A k is reported only if every
    problem has n >= k, so each point of the curve averages over the same
    problems; a k larger than the smallest n is left out of the result (not
    computed on a subset, which would make the curve jump). Raises ValueError
    for an empty ``counts`` or an invalid (n, c) or k < 1."""
    if not counts:
        raise ValueError("mean_pass_at_k: no problems (counts is empty)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"mean_pass_at_k: every k must be an int >= 1, got {k!r}")
    min_n = min(n for n, _ in counts)
    result: dict[int, float] = {}
    for k in sorted(set(ks)):
        if k > min_n:
            continue
        # math.fsum: the mean of many similar floats without drift
        result[k] = math.fsum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return result


def crossover(base: dict[int, float], trained: dict[int, float]) -> int | None:
    """k*: the smallest k at which the base model is at least as good as the
    trained one, i.e. base[k] >= trained[k] - TIE_EPSILON (a tie counts as the
    base catching up). Only ks present in both curves are compared; None if the
    trained model stays strictly ahead at every shared k (or none is shared).

    k* = 1 means training did not even improve pass@1."""
    for k in sorted(set(base) & set(trained)):
        if base[k] >= trained[k] - TIE_EPSILON:
            return k
    return None
