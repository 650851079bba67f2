import math
import random

import pytest
import torch

from constellation.protocol.config import from_dict
from constellation.protocol.messages import CriticTrained, CriticTrainRequest, LabeledItem, ScoreItem, ScoreRequest
from constellation.models.critic_net import BOS, TRUNC, encode_text
from roles.critic import is_heldout
from roles.critic_small import SmallCritic as LearnedCritic

torch.set_num_threads(1)

TINY = {"hidden_size": 32, "layers": 1, "heads": 2, "max_len": 160, "batch_size": 16, "lr": 3e-3,
        "holdout_frac": 0.3}
WORDS = ["john smith", "ada lovelace", "J. Smith", "upper(x)", "cat(x,\".\")", "->", "~>", "2024-01-05"]


def make_critic(tmp_path, steps=5, **critic):
    cfg = from_dict({"critic": {**TINY, "steps": steps, **critic}, "run": {"seed": 0}})
    role = LearnedCritic(cfg, tmp_path)
    role.setup()
    return role


def synthetic(n_problems, per_problem, pos_rate, seed=0):
    """Texts of random DSL-ish filler with a GOOD (label True) or BAD marker at a random place."""
    rng = random.Random(seed)
    items = []
    for p in range(n_problems):
        for k in range(per_problem):
            label = rng.random() < pos_rate
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
            words.insert(rng.randint(0, len(words)), "GOOD" if label else "BAD")
            items.append(LabeledItem(candidate_id=f"train/1/p{p}/{k}", problem_id=f"p{p}",
                                     text=" ".join(words), label=label))
    return items


def score(role, items, rid="s"):
    req = ScoreRequest(request_id=rid, items=[ScoreItem(candidate_id=it.candidate_id, problem_id=it.problem_id,
                                                        text=it.text) for it in items])
    return role.handle(req)


def test_encode_text_cuts_from_the_left():
    assert encode_text("ab", 8) == [BOS, ord("a"), ord("b")]
    ids = encode_text("0123456789", 5)
    assert ids == [TRUNC] + list(b"6789")


def test_is_heldout_is_deterministic_and_near_the_fraction():
    ids = [f"train{i:04d}" for i in range(2000)]
    held = [is_heldout(i, 0.2) for i in ids]
    assert held == [is_heldout(i, 0.2) for i in ids]
    assert 0.17 < sum(held) / len(held) < 0.23
    assert not any(is_heldout(i, 0.0) for i in ids)


def test_untrained_scores_are_probabilities_in_request_order(tmp_path):
    role = make_critic(tmp_path)
    items = synthetic(6, 4, 0.5)
    out = score(role, items)
    assert out.candidate_ids == [it.candidate_id for it in items]
    assert out.critic_version == 0 and len(out.scores) == len(items)
    assert all(0.0 < s < 1.0 for s in out.scores)
    # batching and padding do not change a score: reversed batch and one-item batches agree
    rev = score(role, items[::-1]).scores[::-1]
    single = [score(role, [it]).scores[0] for it in items[:3]]
    assert rev == pytest.approx(out.scores, abs=1e-5)
    assert single == pytest.approx(out.scores[:3], abs=1e-5)
    assert score(role, []).scores == []
    assert role.stats()["done"] == 2 * len(items) + 3


@pytest.mark.slow
def test_training_separates_good_from_bad_with_imbalanced_classes(tmp_path):
    role = make_critic(tmp_path, steps=120)
    items = synthetic(120, 4, pos_rate=0.2)
    reply = role.handle(CriticTrainRequest(request_id="t1", round=1, labels=items))
    assert isinstance(reply, CriticTrained) and reply.version == 1
    m = reply.metrics
    for key in ("auroc", "ece", "n_train", "n_calib", "n_heldout", "pos_rate", "loss_first", "loss_last",
                "seconds", "one_class", "calib_scale", "calib_bias", "heldout_logloss"):
        assert key in m, f"metric {key} missing from {sorted(m)}"
    assert m["n_train"] + m["n_calib"] + m["n_heldout"] == len(items) and m["n_heldout"] > 0
    assert m["auroc"] > 0.9, m
    assert m["loss_last"] < m["loss_first"], m
    assert m["one_class"] == 0.0
    # balanced batches, then calibrated: held-out probabilities stay near the real ~20% rate
    held = [it for it in items if is_heldout(it.problem_id, TINY["holdout_frac"])]
    out = score(role, held)
    assert out.critic_version == 1
    assert abs(sum(out.scores) / len(out.scores) - m["heldout_pos_rate"]) < 0.15, m
    assert (tmp_path / "critic" / "labels_r001.jsonl").exists()
    assert (tmp_path / "critic" / "critic_v001.pt").exists()


def test_one_class_labels_train_without_crashing(tmp_path):
    role = make_critic(tmp_path)
    items = [it for it in synthetic(20, 3, pos_rate=0.0)]
    m = role.handle(CriticTrainRequest(request_id="t1", round=1, labels=items)).metrics
    assert m["one_class"] == 1.0 and "auroc" not in m and m["pos_rate"] == 0.0
    assert all(not math.isnan(v) for v in m.values())
    assert all(0.0 < s < 1.0 for s in score(role, items).scores)


def test_labels_accumulate_across_rounds_deduplicated(tmp_path):
    role = make_critic(tmp_path)
    first, second = synthetic(10, 3, 0.5, seed=1), synthetic(20, 3, 0.5, seed=2)[30:]
    role.handle(CriticTrainRequest(request_id="t1", round=1, labels=first))
    m = role.handle(CriticTrainRequest(request_id="t2", round=2, labels=first + second)).metrics
    assert m["n_new"] == len(second)
    assert m["n_train"] + m["n_calib"] + m["n_heldout"] == len(first) + len(second)
    assert role.version == 2


def test_resent_request_and_restart_do_not_train_twice(tmp_path):
    role = make_critic(tmp_path)
    items = synthetic(10, 3, 0.5)
    reply = role.handle(CriticTrainRequest(request_id="t1", round=1, labels=items))
    assert role.handle(CriticTrainRequest(request_id="t1", round=1, labels=items)) == reply
    before = score(role, items).scores

    restarted = make_critic(tmp_path)  # same run dir: reloads labels and the newest checkpoint
    assert restarted.version == 1 and len(restarted.labels) == len(items)
    assert restarted.handle(CriticTrainRequest(request_id="t1", round=1, labels=items)) == reply
    assert restarted.version == 1
    assert score(restarted, items).scores == pytest.approx(before, abs=1e-6)
