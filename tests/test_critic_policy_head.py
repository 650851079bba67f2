"""critic.impl = "policy_head": LoRA + scalar head on the policy's frozen base weights."""

import random

import pytest
import torch

from constellation.protocol.config import from_dict
from constellation.protocol.messages import CriticTrainRequest, LabeledItem, ScoreItem, ScoreRequest
from constellation.algorithms.calibration import auroc
from roles.critic import is_heldout
from roles.critic_policy_head import PolicyHeadCritic

from test_roles_model import base_dir, run_dir  # noqa: F401  (fixtures: a tiny base model built in the test)

torch.set_num_threads(1)

CRITIC = {"lora_r": 4, "lora_targets": ["q_proj", "v_proj"], "max_len": 48, "batch_size": 16, "lr": 1e-2,
          "holdout_frac": 0.3}


def make_critic(directory, steps=5, **critic):
    cfg = from_dict({"critic": {**CRITIC, "steps": steps, **critic}, "run": {"seed": 0}})
    role = PolicyHeadCritic(cfg, directory)
    role.setup()
    return role


def separable(n_problems, per_problem, seed=0):
    """Short texts whose label is the word 'good' or 'bad' at a random place;
    about a third of the items pass the visible examples."""
    rng = random.Random(seed)
    words = ["red", "blue", "upper(x)", "->", "~>"]
    items = []
    for p in range(n_problems):
        for k in range(per_problem):
            label = rng.random() < 0.4
            text = [rng.choice(words) for _ in range(rng.randint(2, 5))]
            text.insert(rng.randint(0, len(text)), "good" if label else "bad")
            items.append(LabeledItem(candidate_id=f"train/1/p{p}/{k}", problem_id=f"p{p}", text=" ".join(text),
                                     label=label, visible_pass=label or rng.random() < 0.2))
    return items


def scores(role, items):
    req = ScoreRequest(request_id="s", items=[ScoreItem(candidate_id=it.candidate_id, problem_id=it.problem_id,
                                                        text=it.text) for it in items])
    return role.handle(req).scores


def test_only_the_lora_and_head_are_trainable(run_dir):  # noqa: F811
    role = make_critic(run_dir)
    info = role.setup()
    assert 0 < info["trained_params"] < info["params"] / 4
    trainable = [n for n, p in role.net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)


@pytest.mark.slow
def test_training_raises_auroc_on_a_separable_set_and_keeps_the_base_frozen(run_dir):  # noqa: F811
    role = make_critic(run_dir, steps=60)
    frozen = {n: p.detach().clone() for n, p in role.net.named_parameters() if not p.requires_grad}
    items = separable(60, 4)
    held = [it for it in items if is_heldout(it.problem_id, CRITIC["holdout_frac"])]
    before = auroc(scores(role, held), [it.label for it in held])
    m = role.handle(CriticTrainRequest(request_id="t1", round=1, labels=items)).metrics
    assert m["auroc"] > 0.9 and m["auroc"] > (before or 0.5), (before, m)
    assert m["n_heldout_visible_pass"] > 0 and m["visible_pass_accuracy"] > 0.8, m
    assert m["loss_last"] < m["loss_first"]
    for n, p in role.net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"base weight {n} changed"
    # the checkpoint holds the trained parameters only, and a restarted critic scores the same
    ck = torch.load(run_dir / "critic" / "critic_v001.pt", weights_only=True)
    assert ck["state_dict"] and all("lora_" in k or k.startswith("head.") for k in ck["state_dict"])
    restarted = make_critic(run_dir, steps=60)
    assert restarted.version == 1
    assert scores(restarted, held) == pytest.approx(scores(role, held), abs=1e-5)


def test_long_texts_are_cut_from_the_left(run_dir):  # noqa: F811
    role = make_critic(run_dir, max_len=16)
    ids = role.encode("x" * 100 + "END")
    assert len(ids) == 16 and ids[0] == role.tokenizer.bos_token_id
    assert role.tokenizer.decode(ids[1:]).endswith("END")


def test_unknown_lora_targets_fail_at_setup_with_their_names(run_dir):  # noqa: F811
    with pytest.raises(ValueError, match="no_such_proj"):
        make_critic(run_dir, lora_targets=["q_proj", "no_such_proj"])
