import random

import pytest

from constellation.protocol.messages import Candidate, Verdict
from constellation.algorithms.selection import (
    Sample,
    agreement,
    expected_accuracy_best_of_k,
    expected_accuracy_critic,
    expected_accuracy_critic_vote,
    expected_accuracy_majority,
    oracle_accuracy,
    select_best_of_k,
    select_critic,
    select_critic_weighted_vote,
    select_majority,
    select_training_examples,
    selection_accuracy,
)

RIGHT = ("1", "2", "3")  # the true held-out outputs in these tests
WRONG_A = ("1", "2", "4")
WRONG_B = ("0", "0", "0")


def cand(cid, visible=True, outputs=RIGHT, score=None, text=None, correct=None):
    if correct is None:
        correct = outputs == RIGHT
    return Sample(cid, visible, correct, outputs, score, text)


# ---------------------------------------------------------------- best of k


def test_best_of_k_picks_only_visible_pass():
    pool = [cand("a", visible=False), cand("b", outputs=WRONG_A), cand("c", visible=False)]
    for seed in range(10):
        assert select_best_of_k(pool, random.Random(seed)).candidate_id == "b"


def test_best_of_k_none_when_nothing_passes():
    assert select_best_of_k([cand("a", visible=False)], random.Random(0)) is None


def test_expected_best_of_k_is_share_of_passing_that_is_correct():
    pool = [cand("a"), cand("b", outputs=WRONG_A), cand("c", outputs=WRONG_B),
            cand("d", visible=False)]
    assert expected_accuracy_best_of_k(pool) == pytest.approx(1 / 3)


def test_expected_best_of_k_zero_without_passing():
    assert expected_accuracy_best_of_k([cand("a", visible=False)]) == 0.0


def test_expected_best_of_k_matches_empirical_choice():
    pool = [cand("a"), cand("b", outputs=WRONG_A), cand("c"), cand("d", outputs=WRONG_B)]
    rng = random.Random(1)
    hits = sum(select_best_of_k(pool, rng).heldout_correct for _ in range(4000))
    assert hits / 4000 == pytest.approx(expected_accuracy_best_of_k(pool), abs=0.03)


# ---------------------------------------------------------------- critic


def test_critic_picks_highest_score_among_passing():
    pool = [cand("a", score=0.3), cand("b", outputs=WRONG_A, score=0.9),
            cand("c", visible=False, score=0.99)]
    assert select_critic(pool).candidate_id == "b"


def test_critic_tie_breaks_by_smallest_id():
    pool = [cand("z", score=0.7), cand("m", outputs=WRONG_A, score=0.7), cand("q", score=0.1)]
    assert select_critic(pool).candidate_id == "m"


def test_critic_expected_accuracy_averages_tied_top():
    pool = [cand("z", score=0.7), cand("m", outputs=WRONG_A, score=0.7), cand("q", score=0.1)]
    assert expected_accuracy_critic(pool) == pytest.approx(0.5)


def test_critic_unscored_ranks_below_scored():
    pool = [cand("a"), cand("b", outputs=WRONG_A, score=0.01), cand("c", score=float("nan"))]
    assert select_critic(pool).candidate_id == "b"


def test_critic_without_scores_falls_back_to_best_of_k():
    pool = [cand("b", outputs=WRONG_A), cand("a"), cand("c")]
    assert select_critic(pool).candidate_id == "a"
    assert expected_accuracy_critic(pool) == pytest.approx(expected_accuracy_best_of_k(pool))


def test_critic_none_when_nothing_passes():
    assert select_critic([cand("a", visible=False, score=1.0)]) is None
    assert expected_accuracy_critic([]) == 0.0


# ---------------------------------------------------------------- majority


def test_majority_picks_most_common_output_vector():
    pool = [cand("a", outputs=WRONG_A), cand("b"), cand("c"), cand("d", outputs=WRONG_B)]
    assert select_majority(pool).candidate_id == "b"
    assert expected_accuracy_majority(pool) == 1.0


def test_majority_ignores_non_passing_votes():
    pool = [cand("a"), cand("b", outputs=WRONG_A, visible=False),
            cand("c", outputs=WRONG_A, visible=False)]
    assert select_majority(pool).candidate_id == "a"


def test_majority_tie_picks_class_with_smallest_id():
    pool = [cand("d"), cand("b", outputs=WRONG_A), cand("c"), cand("a", outputs=WRONG_A)]
    assert select_majority(pool).candidate_id == "a"


def test_majority_tie_expected_accuracy_is_uniform_over_classes():
    # classes RIGHT x2, WRONG_A x2, WRONG_B x1: two tied winners, one correct
    pool = [cand("a"), cand("b"), cand("c", outputs=WRONG_A), cand("d", outputs=WRONG_A),
            cand("e", outputs=WRONG_B)]
    assert expected_accuracy_majority(pool) == pytest.approx(0.5)


def test_majority_without_output_vectors_falls_back_to_best_of_k():
    pool = [cand("b", outputs=None, correct=True), cand("a", outputs=None, correct=False)]
    assert select_majority(pool).candidate_id == "a"
    assert expected_accuracy_majority(pool) == pytest.approx(0.5)


def test_majority_none_when_nothing_passes():
    assert select_majority([cand("a", visible=False)]) is None
    assert expected_accuracy_majority([]) == 0.0


def test_majority_counts_failed_inputs_as_part_of_the_vector():
    partial = ("1", None, "3")
    pool = [cand("a", outputs=partial), cand("b", outputs=partial), cand("c")]
    assert select_majority(pool).candidate_id == "a"


# ---------------------------------------------------------------- critic vote


def test_critic_vote_weights_override_head_count():
    pool = [cand("a", outputs=WRONG_A, score=0.2), cand("b", outputs=WRONG_A, score=0.2),
            cand("c", score=0.9)]
    assert select_majority(pool).candidate_id == "a"
    assert select_critic_weighted_vote(pool).candidate_id == "c"
    assert expected_accuracy_critic_vote(pool) == 1.0


def test_critic_vote_returns_highest_scored_member_of_winning_class():
    pool = [cand("a", score=0.5), cand("b", score=0.6), cand("c", outputs=WRONG_A, score=0.9)]
    assert select_critic_weighted_vote(pool).candidate_id == "b"


def test_critic_vote_without_scores_is_majority():
    pool = [cand("a", outputs=WRONG_A), cand("b"), cand("c")]
    assert select_critic_weighted_vote(pool).candidate_id == select_majority(pool).candidate_id
    assert expected_accuracy_critic_vote(pool) == expected_accuracy_majority(pool)


def test_critic_vote_tie_within_epsilon():
    # 0.1 + 0.2 vs 0.3: equal up to float noise, so a tie of two classes
    pool = [cand("a", score=0.1), cand("b", score=0.2), cand("c", outputs=WRONG_A, score=0.3)]
    assert expected_accuracy_critic_vote(pool) == pytest.approx(0.5)


# ---------------------------------------------------------------- oracle


def test_oracle_counts_any_correct_candidate():
    assert oracle_accuracy([cand("a", outputs=WRONG_A), cand("b", visible=False)]) == 1.0


def test_oracle_zero_without_correct_candidate():
    assert oracle_accuracy([cand("a", outputs=WRONG_A), cand("b", outputs=WRONG_B)]) == 0.0


# ---------------------------------------------------------------- selection_accuracy


def test_selection_accuracy_splits_into_disjoint_groups_in_order():
    # n=5, k=2: groups (a, b) and (c, d); e is dropped
    pool = [cand("a"), cand("b"), cand("c", outputs=WRONG_A), cand("d", outputs=WRONG_A),
            cand("e")]
    assert selection_accuracy([pool], 2, "oracle") == pytest.approx(0.5)


def test_selection_accuracy_averages_over_problems_equally():
    solved = [cand("a"), cand("b")]
    unsolved = [cand("a", outputs=WRONG_A)] * 4  # two groups, both wrong
    assert selection_accuracy([solved, unsolved], 2, "best_of_k") == pytest.approx(0.5)


def test_selection_accuracy_best_of_k_uses_exact_expectation():
    pool = [cand("a"), cand("b", outputs=WRONG_A), cand("c", outputs=WRONG_A),
            cand("d", outputs=WRONG_A)]
    assert selection_accuracy([pool], 4, "best_of_k") == pytest.approx(0.25)


def test_selection_accuracy_k1_oracle_is_pass_at_1():
    pool = [cand("a"), cand("b", outputs=WRONG_A), cand("c"), cand("d", outputs=WRONG_B)]
    assert selection_accuracy([pool], 1, "oracle") == pytest.approx(0.5)


def test_selection_accuracy_each_policy_on_one_group():
    pool = [cand("a", outputs=WRONG_A, score=0.1), cand("b", outputs=WRONG_A, score=0.1),
            cand("c", score=0.8)]
    expected = {"best_of_k": 1 / 3, "critic": 1.0, "majority": 0.0,
                "critic_vote": 1.0, "oracle": 1.0}
    for policy, want in expected.items():
        assert selection_accuracy([pool], 3, policy) == pytest.approx(want), policy


def test_selection_accuracy_rejects_too_few_samples():
    with pytest.raises(ValueError, match="n=2 candidates, fewer than k=4"):
        selection_accuracy([[cand("a"), cand("b")]], 4, "critic")


def test_selection_accuracy_rejects_unknown_policy():
    with pytest.raises(ValueError, match="unknown selection policy 'best'"):
        selection_accuracy([[cand("a")]], 1, "best")


def test_selection_accuracy_rejects_no_problems():
    with pytest.raises(ValueError, match="no problems"):
        selection_accuracy([], 1, "oracle")


# ---------------------------------------------------------------- training examples


def test_training_examples_empty_without_passing():
    pool = [cand("a", visible=False)]
    assert select_training_examples(pool, "best_of_k", 3, random.Random(0)) == []


def test_training_examples_dedup_by_text():
    pool = [cand("a", text="x = 1"), cand("b", text="x = 1"), cand("c", text="x = 2")]
    chosen = select_training_examples(pool, "critic", 5, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["a", "c"]


def test_training_examples_dedup_by_id_without_text():
    pool = [cand("a"), cand("a"), cand("b")]
    chosen = select_training_examples(pool, "critic", 5, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["a", "b"]


def test_training_examples_respect_per_problem():
    pool = [cand(str(i), text=str(i)) for i in range(10)]
    assert len(select_training_examples(pool, "best_of_k", 3, random.Random(0))) == 3


def test_training_examples_critic_orders_by_score():
    pool = [cand("a", score=0.2, text="a"), cand("b", score=0.9, text="b"),
            cand("c", score=0.5, text="c"), cand("d", text="d")]
    chosen = select_training_examples(pool, "critic", 3, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["b", "c", "a"]


def test_training_examples_majority_only_winning_class():
    pool = [cand("a", text="a"), cand("b", text="b"), cand("c", outputs=WRONG_A, text="c")]
    chosen = select_training_examples(pool, "majority", 5, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["a", "b"]


def test_training_examples_critic_vote_only_winning_class_by_score():
    pool = [cand("a", score=0.4, text="a"), cand("b", score=0.5, text="b"),
            cand("c", outputs=WRONG_A, score=0.6, text="c")]
    chosen = select_training_examples(pool, "critic_vote", 5, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["b", "a"]


def test_training_examples_oracle_only_correct_passing():
    pool = [cand("a", outputs=WRONG_A, text="a"), cand("b", text="b"),
            cand("c", visible=False, text="c")]
    chosen = select_training_examples(pool, "oracle", 5, random.Random(0))
    assert [s.candidate_id for s in chosen] == ["b"]


def test_training_examples_best_of_k_is_seeded():
    pool = [cand(str(i), text=str(i)) for i in range(10)]
    first = select_training_examples(pool, "best_of_k", 4, random.Random(7))
    again = select_training_examples(pool, "best_of_k", 4, random.Random(7))
    assert first == again


# ---------------------------------------------------------------- agreement


def test_agreement_true_when_all_passing_agree():
    pool = [cand("a"), cand("b"), cand("c", outputs=WRONG_A, visible=False)]
    assert agreement(pool) is True


def test_agreement_false_when_passing_disagree():
    assert agreement([cand("a"), cand("b", outputs=WRONG_A)]) is False


def test_agreement_none_with_fewer_than_two_passing():
    assert agreement([cand("a"), cand("b", visible=False)]) is None


def test_agreement_ignores_missing_output_vectors():
    assert agreement([cand("a"), cand("b", outputs=None)]) is None


# ---------------------------------------------------------------- Sample.of


def test_sample_of_a_verdict_alone():
    verdict = Verdict(candidate_id="x", problem_id="p", status="pass", visible_passed=3,
                      visible_total=3, heldout_correct=None, heldout_outputs=["1", None])
    scored = Sample.of(verdict, score=0.4)
    assert scored == Sample("x", True, False, ("1", None), 0.4, None)


# ---------------------------------------------------------------- one pool, every policy, several k


def test_group_results_score_every_policy_on_the_same_groups():
    from constellation.algorithms.selection import group_results, selection_table

    # 4 samples: group 0 = (right, wrong; both pass, critic prefers right) -> disagree;
    # group 1 = (right, not passing) -> agree (one passing candidate)
    pool = [cand("s0", score=0.9), cand("s1", outputs=WRONG_A, score=0.2),
            cand("s2", score=0.5), cand("s3", visible=False, outputs=WRONG_B)]
    rows = group_results({"p": pool}, [2, 4])
    by = {(r.k, r.group): r for r in rows}
    assert set(by) == {(2, 0), (2, 1), (4, 0)}
    assert by[2, 0].agreement == "disagree" and by[2, 1].agreement == "agree"
    assert by[2, 0].accuracy == {"best_of_k": 0.5, "critic": 1.0, "majority": 0.5, "critic_vote": 1.0,
                                 "oracle": 1.0}
    assert by[2, 1].accuracy["best_of_k"] == 1.0
    # k = 4: three pass, two right: best-of-k 2/3; the vote of right outputs wins 2:1
    assert by[4, 0].accuracy["best_of_k"] == pytest.approx(2 / 3)
    assert by[4, 0].accuracy["majority"] == 1.0 and by[4, 0].agreement == "disagree"
    table = selection_table(rows)
    assert table["2"]["all"]["best_of_k"] == pytest.approx(0.75) and table["2"]["all"]["n_groups"] == 2
    assert table["2"]["disagree"]["critic"] == 1.0 and table["2"]["agree"]["n_groups"] == 1
    assert "agree" not in table["4"]  # a class without groups is left out
    # "all" agrees with selection_accuracy, which averages per problem
    assert table["2"]["all"]["critic"] == pytest.approx(selection_accuracy([pool], 2, "critic"))


def test_group_results_skip_a_k_above_the_pool_and_reject_bad_input():
    from constellation.algorithms.selection import group_results

    assert group_results({"p": [cand("a")]}, [2]) == []
    with pytest.raises(ValueError, match="unknown selection policy"):
        group_results({"p": [cand("a")]}, [1], policies=["best"])
    with pytest.raises(ValueError, match="k >= 1"):
        group_results({"p": [cand("a")]}, [0])


def test_sample_of_a_candidate_carries_its_text_and_adapter_version():
    verdict = Verdict(candidate_id="x", problem_id="p", status="fail", visible_passed=1,
                      visible_total=3, heldout_correct=False, heldout_outputs=None)
    candidate = Candidate(id="x", problem_id="p", text="prog", logprob=-1.0, adapter_version=2)
    sample = Sample.of(verdict, candidate, score=0.1)
    assert (sample.text, sample.adapter_version, sample.visible_pass, sample.score) == ("prog", 2, False, 0.1)
