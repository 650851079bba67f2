import itertools
import random

import pytest

from constellation.algorithms.calibration import auroc, expected_calibration_error


def brute_force_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_perfect_ranking_is_one():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0


def test_auroc_reversed_ranking_is_zero():
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0


def test_auroc_all_tied_is_one_half():
    assert auroc([0.5] * 6, [True, False, True, False, False, True]) == 0.5


def test_auroc_matches_pairwise_count_with_ties():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)]
        labels = [rng.random() < 0.5 for _ in range(n)]
        if all(labels) or not any(labels):
            continue
        assert auroc(scores, labels) == pytest.approx(brute_force_auroc(scores, labels))


def test_auroc_one_class_is_none():
    assert auroc([0.1, 0.9], [True, True]) is None


def test_auroc_length_mismatch_raises():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        auroc([0.1, 0.2, 0.3], [True, False])


def test_ece_perfectly_calibrated_is_zero():
    # bin [0.2, 0.3): prob 0.25, 1 of 4 correct
    assert expected_calibration_error([0.25] * 4, [True, False, False, False]) == pytest.approx(0.0)


def test_ece_overconfident_value():
    # all in the top bin at 0.95, half correct: |0.95 - 0.5| = 0.45
    assert expected_calibration_error([0.95] * 4, [True, True, False, False]) == pytest.approx(0.45)


def test_ece_weights_bins_by_count():
    probs = [0.05, 0.05, 0.05, 0.95]
    labels = [False, False, False, False]
    # bin 0: 3/4 * 0.05; bin 9: 1/4 * 0.95
    assert expected_calibration_error(probs, labels) == pytest.approx(0.75 * 0.05 + 0.25 * 0.95)


def test_ece_prob_one_falls_in_last_bin():
    assert expected_calibration_error([1.0], [True]) == pytest.approx(0.0)


def test_ece_empty_is_none():
    assert expected_calibration_error([], []) is None


def test_ece_prob_out_of_range_raises():
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error([1.5], [True])
