import math
from fractions import Fraction

import pytest

from constellation.algorithms.passk import crossover, mean_pass_at_k, pass_at_k


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_exact_fractions_on_a_grid():
    for n in range(1, 31):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                got = pass_at_k(n, c, k)
                want = float(exact_pass_at_k(n, c, k))
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (n, c, k)


def test_pass_at_k_matches_exact_fractions_for_large_n():
    for n, c, k in [(200, 1, 1), (200, 3, 50), (500, 250, 100), (64, 5, 64), (128, 0, 7)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-14)


def test_pass_at_1_is_fraction_correct():
    assert pass_at_k(64, 16, 1) == pytest.approx(0.25)


def test_no_correct_sample_gives_zero():
    assert pass_at_k(10, 0, 5) == 0.0


def test_fewer_wrong_than_k_gives_one():
    assert pass_at_k(10, 8, 3) == 1.0


def test_stable_at_n_1000():
    # C(1000, 500) ~ 1e299: the binomial form would be at the edge of float range
    for c, k in [(1, 1), (1, 500), (3, 999), (500, 500), (999, 1000), (10, 100)]:
        got = pass_at_k(1000, c, k)
        assert math.isfinite(got) and 0.0 <= got <= 1.0
        assert got == pytest.approx(float(exact_pass_at_k(1000, c, k)), rel=1e-10, abs=1e-14)


def test_monotone_in_k():
    values = [pass_at_k(1000, 7, k) for k in range(1, 1001)]
    assert all(a <= b + 1e-15 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("n, c, k", [
    (5, 6, 1),    # c > n
    (5, -1, 1),   # c < 0
    (5, 2, 0),    # k < 1
    (5, 2, 6),    # k > n
    (0, 0, 1),    # no samples
    (5, 2, 1.0),  # not an int
])
def test_invalid_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_k_greater_than_n_error_names_both():
    with pytest.raises(ValueError, match=r"k=9, n=4"):
        pass_at_k(4, 1, 9)


def test_mean_pass_at_k_averages_problems():
    result = mean_pass_at_k([(4, 1), (4, 4), (4, 0)], [1, 2])
    assert result[1] == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert result[2] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_mean_pass_at_k_omits_k_above_smallest_n():
    result = mean_pass_at_k([(8, 2), (4, 1)], [1, 4, 8])
    assert sorted(result) == [1, 4]


def test_mean_pass_at_k_empty_counts_raise():
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], [1])


def test_mean_pass_at_k_rejects_k_zero():
    with pytest.raises(ValueError):
        mean_pass_at_k([(4, 1)], [0])


def test_crossover_finds_smallest_k_where_base_catches_up():
    base = {1: 0.2, 2: 0.4, 4: 0.7, 8: 0.9}
    trained = {1: 0.5, 2: 0.6, 4: 0.65, 8: 0.8}
    assert crossover(base, trained) == 4


def test_crossover_none_when_trained_always_ahead():
    assert crossover({1: 0.1, 2: 0.2}, {1: 0.3, 2: 0.4}) is None


def test_crossover_tie_counts_as_base_catching_up():
    # 0.1 + 0.2 is a hair above 0.3 in floats: the epsilon makes it a tie
    assert crossover({1: 0.1, 2: 0.3}, {1: 0.5, 2: 0.1 + 0.2}) == 2


def test_crossover_ignores_ks_missing_from_one_curve():
    assert crossover({1: 0.1, 2: 0.9, 4: 0.9}, {1: 0.5, 4: 0.8}) == 4
