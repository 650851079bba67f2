"""constellation/models/dpo.py (the DPO math) and roles/trainer_dpo.py on a tiny random Llama built here.

The TRL tests check our loss and LoRA gradients against trl.DPOTrainer's own
loss computation on the same model and batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from constellation.protocol.config import Config, ModelConfig  # noqa: E402
from constellation.protocol.messages import JudgeItem, JudgeRequest, PreferencePair, TrainRequest  # noqa: E402
from constellation.models import base_model, dpo
from constellation.models import lm, sft  # noqa: E402
from constellation.models.dpo import DPOArgs, NoUsablePairs, train_dpo  # noqa: E402
from constellation.models.judge import judge_likelihood, judge_llm  # noqa: E402
from roles.trainer_dpo import DpoTrainer  # noqa: E402

TOKENS = ["upper(", "lower(", "cat("]
WORDS = ["red", "blue", "fast", "data", "apple", "river", "green", "cloud"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A random (not warm-started) tiny Llama and its tokenizer, saved as a HF folder."""
    path = tmp_path_factory.mktemp("tiny-dpo")
    tokenizer = base_model.build_tokenizer(TOKENS)
    mcfg = ModelConfig(hidden_size=32, layers=2, heads=4, intermediate_size=64, max_len=64)
    model = base_model.build_tiny_model(mcfg, tokenizer, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def toy_pairs(n: int, source: str = "verifier") -> list[PreferencePair]:
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)] + WORDS[(3 * i + 1) % len(WORDS)]
        out.append(PreferencePair(problem_id=f"P{i}", prompt=f"{w}=>", chosen=f"upper({w})",
                                  rejected=f"lower({w[:3]})", source=source))
    return out


def lora(base_dir, seed=0, perturb=True):
    model, tokenizer = sft.load_lora_model(base_dir, None, sft.LoraArgs(r=4, alpha=8), seed=seed)
    if perturb:  # a fresh LoRA is the identity (B = 0): give it weight so policy != reference
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model, tokenizer


# --------------------------------------------------------------------------
# encoding and log-probs
# --------------------------------------------------------------------------


def test_encode_pair_truncates_the_prompt_from_the_left_and_keeps_bos(base_dir):
    _, tokenizer = lm.load_model(base_dir)
    full = dpo.encode_pair(tokenizer, "abcdefghij=>", "upper(x)", "x", max_len=100)
    cut = dpo.encode_pair(tokenizer, "abcdefghij=>", "upper(x)", "x", max_len=len(full.chosen_ids) + 4)
    assert not full.prompt_truncated and cut.prompt_truncated
    assert cut.chosen_ids == full.chosen_ids and cut.rejected_ids == full.rejected_ids  # completions whole
    assert cut.prompt_ids == [tokenizer.bos_token_id] + full.prompt_ids[-3:]
    assert len(cut.prompt_ids) + len(cut.chosen_ids) == len(full.chosen_ids) + 4


def test_encode_pair_never_cuts_a_completion(base_dir):
    _, tokenizer = lm.load_model(base_dir)
    assert dpo.encode_pair(tokenizer, "ab=>", "upper(abcdefgh)", "x", max_len=5) is None


def test_collate_pairs_puts_chosen_rows_first_and_masks_completions(base_dir):
    _, tokenizer = lm.load_model(base_dir)
    enc = [dpo.encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64) for p in toy_pairs(2)]
    ids, attn, comp = dpo.collate_pairs(enc, tokenizer.pad_token_id)
    assert ids.shape[0] == 4
    assert ids[2, :len(enc[0].prompt_ids) + len(enc[0].rejected_ids)].tolist() == enc[0].prompt_ids + enc[0].rejected_ids
    assert comp[0].sum() == len(enc[0].chosen_ids) and comp[3].sum() == len(enc[1].rejected_ids)
    assert (comp <= attn).all()


def test_completion_logps_match_a_full_softmax(base_dir):
    model, tokenizer = lora(base_dir)
    enc = [dpo.encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64) for p in toy_pairs(3)]
    batch = dpo.collate_pairs(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        got, lengths, _ = dpo.completion_logps(model, *batch)
        for row, (ids, n) in enumerate([(e.prompt_ids + e.chosen_ids, len(e.prompt_ids)) for e in enc]
                                       + [(e.prompt_ids + e.rejected_ids, len(e.prompt_ids)) for e in enc]):
            logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            want = sum(logp[i - 1, ids[i]].item() for i in range(n, len(ids)))
            assert got[row].item() == pytest.approx(want, abs=1e-4)
            assert lengths[row] == len(ids) - n


def test_shared_prompt_logps_equal_full_sequence_logps_and_gradients(base_dir):
    model, tokenizer = lora(base_dir)
    ps = toy_pairs(5)
    ps[1] = PreferencePair(problem_id="L", prompt="a much longer prompt=>", chosen="x", rejected="upper(abcdef)",
                           source="verifier")  # uneven prompt and completion lengths in one batch
    enc = [dpo.encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64) for p in ps]
    chosen, rejected, chosen_len, rejected_len, _ = dpo.pair_logps(model, dpo.collate_shared(enc, tokenizer.pad_token_id))
    (chosen.sum() - 2 * rejected.sum()).backward()
    shared_grads = _grads(model)
    model.zero_grad()
    full, lengths, _ = dpo.completion_logps(model, *dpo.collate_pairs(enc, tokenizer.pad_token_id))
    (full[:5].sum() - 2 * full[5:].sum()).backward()
    torch.testing.assert_close(chosen, full[:5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rejected, full[5:], rtol=1e-5, atol=1e-5)
    assert chosen_len.tolist() == lengths[:5].tolist() and rejected_len.tolist() == lengths[5:].tolist()
    for name, g in _grads(model).items():
        torch.testing.assert_close(shared_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------
# losses on hand-made numbers
# --------------------------------------------------------------------------


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_sigmoid_loss_by_hand():
    loss, c, r = dpo.preference_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), _t(2), _t(4), beta=0.5)
    delta = (-1 + 2) - (-3 + 2)  # 2
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5 * delta)))
    assert (c.item(), r.item()) == (1.0, -1.0)


def test_length_normalised_sigmoid_by_hand():
    loss, _, _ = dpo.preference_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), _t(2), _t(4), beta=0.5,
                                     length_normalize=True)
    delta = 1 / 2 - (-1) / 4
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5 * delta)))


def test_ipo_loss_by_hand():
    loss, _, _ = dpo.preference_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), _t(2), _t(4), beta=0.5,
                                     loss_type="ipo")
    assert loss.item() == pytest.approx((1 / 2 + 1 / 4 - 1.0) ** 2)


def test_bad_loss_type_and_beta_are_named():
    with pytest.raises(ValueError, match="'kto'"):
        dpo.preference_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), _t(1), _t(1), beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        dpo.preference_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), _t(1), _t(1), beta=0)


def test_pair_weights_make_a_weighted_mean(base_dir):
    model, tokenizer = lora(base_dir)
    enc = [dpo.encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64) for p in toy_pairs(2)]
    batch = dpo.collate_shared(enc, tokenizer.pad_token_id)
    ref = torch.zeros(2)
    with torch.no_grad():
        per_pair = [dpo.dpo_batch_loss(model, dpo.collate_shared([e], tokenizer.pad_token_id), ref[:1], ref[:1],
                                       beta=0.1)[0].item() for e in enc]
        weighted, _ = dpo.dpo_batch_loss(model, batch, ref, ref, torch.tensor([1.0, 0.25]), beta=0.1)
    assert weighted.item() == pytest.approx((per_pair[0] + 0.25 * per_pair[1]) / 1.25, rel=1e-5)


# --------------------------------------------------------------------------
# against TRL
# --------------------------------------------------------------------------

TRL_CASES = [  # (our kwargs, TRL loss types, TRL loss weights)
    ({"loss_type": "sigmoid"}, ["sigmoid"], None),
    ({"loss_type": "ipo"}, ["ipo"], None),
    ({"loss_type": "sigmoid", "length_normalize": True}, ["sigmoid_norm"], None),
    ({"loss_type": "sigmoid", "sft_weight": 0.3}, ["sigmoid", "sft"], [1.0, 0.3]),
]


@pytest.fixture(scope="module")
def trl_env(base_dir, tmp_path_factory):
    pytest.importorskip("trl")
    from datasets import Dataset

    pairs = toy_pairs(4)
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    return pairs, dataset, tmp_path_factory.mktemp("trl-out")


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("ours, loss_types, loss_weights", TRL_CASES, ids=lambda x: str(x))
def test_loss_and_gradients_match_trl(base_dir, trl_env, ours, loss_types, loss_weights):
    from trl import DPOConfig, DPOTrainer

    pairs, dataset, out_dir = trl_env
    beta = 0.2
    model, tokenizer = lora(base_dir, seed=1)
    enc = [dpo.encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, 64) for p in pairs]
    batch = dpo.collate_shared(enc, tokenizer.pad_token_id)
    # the reference, as our trainer takes it: the model at the start of the round
    with torch.no_grad():
        ref_chosen, ref_rejected, _, _, _ = dpo.pair_logps(model, batch)
    args = DPOConfig(output_dir=str(out_dir), beta=beta, loss_type=loss_types, loss_weights=loss_weights,
                     per_device_train_batch_size=4, report_to="none", use_cpu=True, max_length=None,
                     precompute_ref_log_probs=False, dataset_num_proc=None, logging_steps=1)
    # TRL keeps a frozen copy of the adapter it is given (adapter "ref") as its reference
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert "ref" in model.peft_config
    # then the policy moves away from the reference, as after some training steps
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.train()
    model.zero_grad()
    loss, _ = dpo.dpo_batch_loss(model, batch, ref_chosen, ref_rejected, beta=beta, **ours)
    loss.backward()
    ours_grads = _grads(model)
    model.zero_grad()

    # the same token ids through TRL's own collator (not its tokenization: ours keeps the prompt/completion
    # boundary exact, see roles/base_model.encode_example)
    examples = [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids} for e in enc]
    trl_batch = trainer.data_collator(examples)
    assert torch.equal(trl_batch["input_ids"], dpo.collate_pairs(enc, tokenizer.pad_token_id)[0])
    trl_loss = trainer.compute_loss(trainer.model, trl_batch)
    trl_loss.backward()
    trl_grads = _grads(model)

    assert abs(loss.item() - math.log(2)) > 1e-3  # policy != reference: the check below is not at a trivial point
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    assert ours_grads.keys() == trl_grads.keys() and len(ours_grads) > 0
    for name in ours_grads:
        torch.testing.assert_close(ours_grads[name], trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in ours_grads.values())


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------


def test_train_dpo_raises_the_implicit_reward_of_chosen(base_dir):
    model, tokenizer = lora(base_dir, perturb=False)
    metrics = train_dpo(model, tokenizer, toy_pairs(16), DPOArgs(beta=0.5, lr=5e-3, epochs=8, batch_size=8,
                                                                max_len=64, holdout_frac=0.25, seed=0))
    assert metrics["loss_last"] < metrics["loss_first"]
    assert metrics["reward_margin"] > 0 and metrics["reward_accuracy"] > 0.5
    assert metrics["chosen_logp_shift"] > metrics["rejected_logp_shift"]
    assert metrics["n_heldout_pairs"] > 0 and metrics["n_train_pairs"] + metrics["n_heldout_pairs"] == 16
    assert "heldout_reward_accuracy" in metrics and metrics["n_pairs_verifier"] == 16


def test_train_dpo_stops_at_max_seconds_after_one_step(base_dir):
    model, tokenizer = lora(base_dir, perturb=False)
    metrics = train_dpo(model, tokenizer, toy_pairs(8), DPOArgs(epochs=5, batch_size=2, max_len=64, max_seconds=1e-9))
    assert metrics["steps"] == 1 and "reward_margin" in metrics


def test_train_dpo_cuts_long_prompts_and_drops_pairs_whose_completion_cannot_fit(base_dir):
    model, tokenizer = lora(base_dir, perturb=False)
    ps = toy_pairs(4) + [PreferencePair(problem_id="X", prompt="p=>", chosen="upper(" + "a" * 40 + ")",
                                        rejected="x", source="verifier")]
    metrics = train_dpo(model, tokenizer, ps, DPOArgs(max_len=14, batch_size=4))
    assert metrics["n_too_long"] == 1 and metrics["n_prompt_truncated"] == 4 and metrics["n_train_pairs"] == 4


def test_train_dpo_with_no_pair_that_fits_raises_no_usable_pairs(base_dir):
    model, tokenizer = lora(base_dir, perturb=False)
    with pytest.raises(NoUsablePairs, match="max_len 4"):
        train_dpo(model, tokenizer, toy_pairs(2), DPOArgs(max_len=4))


# --------------------------------------------------------------------------
# the trainer role
# --------------------------------------------------------------------------


@pytest.fixture
def trainer(base_dir, tmp_path):
    (tmp_path / "base_model.txt").write_text(str(base_dir))
    cfg = Config()
    cfg.trainer.impl, cfg.trainer.lora_r, cfg.trainer.lora_alpha = "dpo", 4, 8
    cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.lr, cfg.trainer.max_seconds = 2, 8, 5e-3, 0.0
    cfg.model.max_len = 64
    role = DpoTrainer(cfg, tmp_path)
    role.setup()
    return role


def test_trainer_round_writes_an_adapter_and_the_next_round_continues_from_it(trainer):
    first = trainer.handle(TrainRequest(request_id="t1", round=1, examples=[], pairs=toy_pairs(8)))
    assert first.version == 1 and (Path(first.path) / "adapter_config.json").exists()
    assert first.metrics["init_version"] == 0 and "reward_margin" in first.metrics
    second = trainer.handle(TrainRequest(request_id="t2", round=2, examples=[], pairs=toy_pairs(8)))
    assert second.version == 2 and second.metrics["init_version"] == 1
    again = trainer.handle(TrainRequest(request_id="t2b", round=2, examples=[], pairs=toy_pairs(8)))
    assert again.metrics["cached"] == 1 and again.path == second.path


def test_trainer_empty_pair_set_is_skipped_and_keeps_the_adapter(trainer):
    reply = trainer.handle(TrainRequest(request_id="t1", round=1, examples=[], pairs=[]))
    assert (reply.version, reply.path, reply.metrics["skipped"]) == (0, "", 1.0)


def test_trainer_nan_loss_raises_and_keeps_the_previous_adapter(trainer, monkeypatch):
    trainer.handle(TrainRequest(request_id="t1", round=1, examples=[], pairs=toy_pairs(4)))
    monkeypatch.setattr(dpo, "preference_loss", lambda *a, **k: (torch.full((a[0].shape[0],), float("nan"),
                                                                             requires_grad=True), a[0], a[1]))
    with pytest.raises(FloatingPointError, match="no adapter written"):
        trainer.handle(TrainRequest(request_id="t2", round=2, examples=[], pairs=toy_pairs(4)))
    assert trainer.last_version == 1 and not (trainer.adapters_dir / "v2").exists()


def test_trainer_rejects_bad_loss_settings(base_dir, tmp_path):
    cfg = Config()
    cfg.trainer.loss_type = "hinge"
    with pytest.raises(ValueError, match="'hinge'"):
        DpoTrainer(cfg, tmp_path)


def test_self_judge_likelihood_scores_each_candidate(trainer):
    items = [JudgeItem(candidate_id=f"c{i}", problem_id="P", prompt="redblue=>", text=t)
             for i, t in enumerate(["upper(redblue)", "lower(red)"])]
    reply = trainer.handle(JudgeRequest(request_id="j", round=1, items=items))
    assert reply.method == "likelihood" and reply.candidate_ids == ["c0", "c1"]
    assert all(s is not None and s < 0 for s in reply.scores)


def test_judge_likelihood_is_the_mean_token_logprob(base_dir):
    model, tokenizer = lm.load_model(base_dir)
    item = JudgeItem(candidate_id="c", problem_id="P", prompt="red=>", text="upper(red)")
    ids, n = lm.encode_example(tokenizer, item.prompt, item.text)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    want = sum(logp[i - 1, ids[i]].item() for i in range(n, len(ids))) / (len(ids) - n)
    assert judge_likelihood(model, tokenizer, [item])[0] == pytest.approx(want, abs=1e-5)


def test_judge_llm_reads_scores_and_unparseable_answers_are_no_judgment(base_dir, monkeypatch):
    model, tokenizer = lm.load_model(base_dir)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    items = [JudgeItem(candidate_id=f"c{i}", problem_id="P", prompt="red=>", text=t)
             for i, t in enumerate(["upper(red)", "lower(red)", "red"])]
    seen = []

    def fake_sample(model, tokenizer, prompts, k, **kw):
        seen.extend(prompts)
        return [[(answer, 0.0)] for answer in ["Score: 4", "I cannot tell", "2/5"]]

    monkeypatch.setattr(lm, "sample", fake_sample)
    assert judge_llm(model, tokenizer, items) == [4.0, None, 2.0]
    assert "0 to 5" in seen[0] and "upper(red)" in seen[0] and "red=>" in seen[0]


def test_judge_llm_runs_on_a_real_model(base_dir):
    model, tokenizer = lm.load_model(base_dir)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    item = JudgeItem(candidate_id="c", problem_id="P", prompt="red=>", text="upper(red)")
    scores = judge_llm(model, tokenizer, [item, item])
    assert len(scores) == 2 and all(s is None or 0.0 <= s <= 5.0 for s in scores)
