import random
from types import SimpleNamespace

import pytest

from constellation.protocol import messages as m
from constellation.algorithms import pairs
from constellation.runtime import pairing
from constellation.protocol.config import PairsConfig
from constellation.algorithms.selection import Sample


def S(cid, visible_pass, score=None, text=None, heldout_correct=False):
    return Sample(candidate_id=cid, visible_pass=visible_pass, heldout_correct=heldout_correct, score=score,
                  text=text if text is not None else f"prog-{cid}")


def test_verifier_pairs_visible_pass_over_fail_and_ignores_heldout():
    pool = [S("a", True, heldout_correct=False), S("b", False, heldout_correct=True), S("c", False)]
    got = pairs.pairs_for_problem(pool, "verifier", max_per_problem=5, rng=random.Random(0))
    assert len(got) == 2  # max(1 good, 2 bad): every bad candidate used once
    assert all(c.candidate_id == "a" and not r.visible_pass and margin == 1.0 for c, r, margin in got)
    assert {r.candidate_id for _, r, _ in got} == {"b", "c"}


def test_verifier_needs_both_a_good_and_a_bad_candidate():
    assert pairs.pairs_for_problem([S("a", True), S("b", True)], "verifier") == []
    assert pairs.pairs_for_problem([S("a", False), S("b", False)], "verifier") == []


def test_cap_per_problem_is_respected():
    pool = [S(f"g{i}", True) for i in range(4)] + [S(f"b{i}", False) for i in range(4)]
    assert len(pairs.pairs_for_problem(pool, "verifier", max_per_problem=3)) == 3
    assert len(pairs.pairs_for_problem(pool, "verifier", max_per_problem=10)) == 4


def test_verifier_pairs_never_repeat():
    pool = [S(f"g{i}", True) for i in range(3)] + [S(f"b{i}", False) for i in range(5)]
    got = pairs.pairs_for_problem(pool, "verifier", max_per_problem=100, rng=random.Random(3))
    ids = [(c.candidate_id, r.candidate_id) for c, r, _ in got]
    assert len(ids) == len(set(ids)) == 5


def test_dedup_drops_identical_completions():
    pool = [S("a", True, text="x"), S("b", True, text="x "), S("c", False, text="y"), S("d", False, text="y")]
    assert len(pairs.pairs_for_problem(pool, "verifier", max_per_problem=10, dedup=True)) == 1
    assert len(pairs.pairs_for_problem(pool, "verifier", max_per_problem=10, dedup=False)) == 2


def test_identical_chosen_and_rejected_text_is_never_a_pair():
    # the verifier cannot disagree with itself on one text, but ranked sources can tie-break oddly
    pool = [S("a", True, score=0.9, text="same"), S("b", True, score=0.1, text="same")]
    assert pairs.pairs_for_problem(pool, "critic", dedup=False) == []


def test_critic_pairs_best_against_worst_among_visible_pass():
    pool = [S("a", True, 0.2), S("b", True, 0.9), S("c", False, 0.99), S("d", True, 0.5), S("e", False, 0.0)]
    got = pairs.pairs_for_problem(pool, "critic", among="pass", max_per_problem=5)
    assert [(c.candidate_id, r.candidate_id) for c, r, _ in got] == [("b", "a")]  # 3 ranked -> 1 pair
    assert got[0][2] == pytest.approx(0.7)


def test_critic_among_all_ranks_every_candidate():
    pool = [S("a", True, 0.2), S("b", True, 0.9), S("c", False, 0.99), S("d", True, 0.5), S("e", False, 0.0)]
    got = pairs.pairs_for_problem(pool, "critic", among="all", max_per_problem=5)
    assert [(c.candidate_id, r.candidate_id) for c, r, _ in got] == [("c", "e"), ("b", "a")]


def test_min_margin_and_ties_drop_pairs():
    pool = [S("a", True, 0.6), S("b", True, 0.5), S("c", True, 0.5), S("d", True, 0.4)]
    assert len(pairs.pairs_for_problem(pool, "critic", max_per_problem=5, min_margin=0.0)) == 1  # (a,d); (b,c) tie
    assert pairs.pairs_for_problem(pool, "critic", max_per_problem=5, min_margin=0.3) == []


def test_unscored_candidates_are_left_out_not_zero():
    pool = [S("a", True, 0.1), S("b", True, None), S("c", True, float("nan"))]
    assert pairs.pairs_for_problem(pool, "critic") == []


def test_build_pairs_carries_prompt_source_round_and_margin():
    pools = {"P1": [S("a", True, 0.8, text="good"), S("b", True, 0.3, text="bad")], "P2": [S("c", True, 0.5)]}
    got = pairs.build_pairs(pools, {"P1": "prompt1", "P2": "prompt2"}, "critic", round=3)
    assert got == [m.PreferencePair(problem_id="P1", prompt="prompt1", chosen="good", rejected="bad",
                                    source="critic", margin=pytest.approx(0.5), round=3)]


def test_build_pairs_without_a_prompt_is_an_error():
    with pytest.raises(KeyError, match="P9"):
        pairs.build_pairs({"P9": [S("a", True), S("b", False)]}, {}, "verifier")


def test_build_pairs_is_deterministic_per_seed():
    pool = [S(f"g{i}", True) for i in range(4)] + [S(f"b{i}", False) for i in range(4)]
    a = pairs.build_pairs({"P": pool}, {"P": "x"}, "verifier", max_per_problem=2, seed=1)
    b = pairs.build_pairs({"P": pool}, {"P": "x"}, "verifier", max_per_problem=2, seed=1)
    assert a == b


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "votes"}, "pairs.source"), ({"source": "critic", "among": "some"}, "pairs.among"),
    ({"source": "critic", "max_per_problem": 0}, "max_per_problem"),
    ({"source": "critic", "min_margin": -1.0}, "min_margin"), ({"source": "critic", "mix_decay": 2.0}, "mix_decay"),
    ({"source": "critic", "judge": "gpt"}, "pairs.judge"), ({"source": "critic", "holdout_frac": 1.0}, "holdout"),
])
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairs.check_pairs_config(**kwargs)


def test_with_judgments_replaces_scores_and_none_means_unjudged():
    pools = {"P": [S("a", True, 0.9), S("b", True, 0.1), S("c", True, 0.5)]}
    judged = pairs.with_judgments(pools, {"a": -2.0, "b": -0.5})
    assert [s.score for s in judged["P"]] == [-2.0, -0.5, None]
    got = pairs.pairs_for_problem(judged["P"], "self_judge")
    assert [(c.candidate_id, r.candidate_id) for c, r, _ in got] == [("b", "a")]


def _pair(pid, rnd, weight=1.0):
    return m.PreferencePair(problem_id=pid, prompt="p", chosen="c", rejected="r", source="verifier", round=rnd,
                            weight=weight)


def test_mix_earlier_weights_by_decay_per_round_of_age():
    earlier = {1: [_pair("a", 1)], 2: [_pair("b", 2)]}
    mixed = pairs.mix_earlier([_pair("c", 3)], earlier, round=3, mix_rounds=2, decay=0.5)
    assert [(p.problem_id, p.weight) for p in mixed] == [("c", 1.0), ("b", 0.5), ("a", 0.25)]
    assert pairs.mix_earlier([_pair("c", 3)], earlier, round=3, mix_rounds=0, decay=0.5) == [_pair("c", 3)]
    assert len(pairs.mix_earlier([_pair("c", 3)], earlier, round=3, mix_rounds=1, decay=0.0)) == 1


def test_split_holdout_keeps_problems_whole():
    ps = [_pair(f"P{i % 20}", 1) for i in range(100)]
    train, held = pairs.split_holdout(ps, 0.3, seed=0)
    assert len(train) + len(held) == 100 and held and train
    assert not {p.problem_id for p in train} & {p.problem_id for p in held}
    assert pairs.split_holdout(ps, 0.0) == (ps, [])


def test_save_and_load_round_pairs(tmp_path):
    pairing.save_round_pairs(tmp_path, 2, [_pair("a", 2)])
    assert pairing.load_round_pairs(tmp_path, [1, 2]) == {2: [_pair("a", 2)]}


def test_round_pairs_mixes_earlier_rounds_from_disk(tmp_path):
    cfg = PairsConfig(source="verifier", mix_rounds=1, mix_decay=0.5, max_per_problem=1)
    pools = {"P": [S("a", True), S("b", False)]}
    first, info1 = pairing.round_pairs(cfg, tmp_path, 1, pools, {"P": "x"})
    second, info2 = pairing.round_pairs(cfg, tmp_path, 2, pools, {"P": "x"})
    assert info1["n_pairs"] == 1 and info1["n_earlier"] == 0
    assert info2["n_earlier"] == 1 and [p.weight for p in second] == [1.0, 0.5]
    assert info2["by_source"] == {"verifier": 2}


def test_round_pairs_self_judge_asks_the_judge_only_for_rankable_candidates(tmp_path):
    cfg = PairsConfig(source="self_judge", among="pass")
    pools = {"P": [S("a", True), S("b", True), S("c", False)]}
    asked = []

    def judge(items):
        asked.extend(i.candidate_id for i in items)
        return m.Judgments(request_id="j", candidate_ids=["a", "b"], scores=[-1.0, None], method="likelihood")

    got, info = pairing.round_pairs(cfg, tmp_path, 1, pools, {"P": "x"}, judge)
    assert asked == ["a", "b"] and got == []  # b has no judgment: nothing to rank against
    assert info["n_judged"] == 1 and info["judge_method"] == "likelihood"


@pytest.mark.parametrize("text, score", [
    ("Score: 4", 4.0), ("I'd give it a score of 3.5 overall. Score = 3.5", 3.5), ("4/5", 4.0),
    ("Rating: 2 out of 5", 2.0), ("5", 5.0), ("**3**", 3.0),
    ("", None), ("no idea", None), ("Score: 7", None), ("Score: 2 ... actually Score: 4", None),
    ("between 2/5 and 3/5", None),
])
def test_parse_judgment(text, score):
    assert pairs.parse_judgment(text) == score


def test_pairs_config_section_exists_with_defaults():
    cfg = SimpleNamespace(**{f: getattr(PairsConfig(), f) for f in PairsConfig.__struct_fields__})
    pairs.check_pairs_config(cfg.source, cfg.among, cfg.max_per_problem, cfg.min_margin, cfg.judge,
                             cfg.mix_rounds, cfg.mix_decay, cfg.holdout_frac)
