"""DPO math: pair encoding, completion log-probs, the DPO/IPO losses, metrics.

Conventions (the same as TRL's DPOTrainer, which tests/test_dpo.py checks
loss and gradients against):
  * A batch of B pairs is one forward of 2B rows, chosen rows first:
    rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected, right-padded.
  * A completion's log-prob is the sum over its tokens (the completion and its
    eos) of log p(token | everything before it); prompt and padding count 0.
  * rewards: r = beta * (log pi(y|x) - log pi_ref(y|x)), summed over tokens.
  * sigmoid (DPO):  loss = -log sigmoid(beta * (delta_chosen - delta_rejected)),
    delta = log-ratio, or with ``length_normalize`` the log-ratio divided by
    the completion's token count (TRL's "sigmoid_norm").
  * ipo:  loss = (delta_c/n_c - delta_r/n_r - 1/(2 beta))^2 -- always per-token
    averaged log-ratios, as the IPO authors' reported runs and TRL do.
  * sft term (RPO-style): mean negative log-likelihood per chosen token over
    the whole batch, times ``sft_weight``.
  * Pair weights (earlier rounds' pairs, see constellation.pairs.mix_earlier)
    make the preference loss a weighted mean; with all weights 1 it is the
    plain mean.
"""

from __future__ import annotations

from dataclasses import dataclass

from roles.base_model import encode_example

LOSS_TYPES = ("sigmoid", "ipo")


@dataclass(frozen=True)
class EncodedPair:
    prompt_ids: list[int]  # [bos] + prompt, possibly cut from the left (after bos)
    chosen_ids: list[int]  # completion + eos
    rejected_ids: list[int]
    prompt_truncated: bool


def encode_pair(tokenizer, prompt: str, chosen: str, rejected: str, max_len: int) -> EncodedPair | None:
    """Token ids of one pair, each sequence (prompt + completion) <= max_len.

    A too-long pair loses prompt tokens from the left (the oldest visible
    examples; bos stays first), never completion tokens. A pair whose longer
    completion alone leaves no room for bos (or one prompt token without bos)
    cannot be trained on without cutting the completion: None."""
    prompt_ids, _ = encode_example(tokenizer, prompt, None)
    eos = tokenizer.eos_token_id
    chosen_ids = tokenizer.encode(chosen, add_special_tokens=False) + [eos]
    rejected_ids = tokenizer.encode(rejected, add_special_tokens=False) + [eos]
    room = max_len - max(len(chosen_ids), len(rejected_ids))
    if room < 1:
        return None
    truncated = len(prompt_ids) > room
    if truncated:
        has_bos = tokenizer.bos_token_id is not None and prompt_ids[0] == tokenizer.bos_token_id
        prompt_ids = prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1:] if has_bos and room > 1 else (
            prompt_ids[:1] if has_bos else prompt_ids[-room:])
    return EncodedPair(prompt_ids, chosen_ids, rejected_ids, truncated)


def collate_pairs(pairs: list[EncodedPair], pad_id: int):
    """-> input_ids, attention_mask, completion_mask, each (2B, T), chosen rows first."""
    import torch

    seqs = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
    n_prompt = [len(p.prompt_ids) for p in pairs] * 2
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    completion_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (ids, n) in enumerate(zip(seqs, n_prompt)):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        completion_mask[row, n:len(ids)] = 1
    return input_ids, attention_mask, completion_mask


def completion_logps(model, input_ids, attention_mask, completion_mask):
    """-> (sum of completion-token log-probs (R,), completion token counts (R,),
    per-token log-probs (R, T-1), zero outside completions).

    Only positions that predict a completion token go through the vocabulary
    softmax: the hidden states of prompt and padding positions are dropped
    before the LM head. Works for a plain causal LM and a peft model."""
    import torch

    target_mask = completion_mask[:, 1:].bool()  # (R, T-1): position t predicts token t+1
    hidden = _backbone(model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (R, T, H)
    picked = hidden[:, :-1][target_mask]  # (N, H), N = completion tokens in the batch
    logits = _lm_head(model)(picked).float()  # (N, V)
    targets = input_ids[:, 1:][target_mask]  # (N,)
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    per_token = torch.zeros(target_mask.shape, dtype=token_logps.dtype).masked_scatter(target_mask, token_logps)
    return per_token.sum(-1), target_mask.sum(-1), per_token


def _unwrap(model):
    """The transformers model under a peft wrapper (LoRA layers stay in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _backbone(model):
    return _unwrap(model).get_decoder()


def _lm_head(model):
    return _unwrap(model).get_output_embeddings()


def preference_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_len, rejected_len,
                    *, beta: float, loss_type: str = "sigmoid", length_normalize: bool = False):
    """All arguments (B,). -> per-pair loss (B,), chosen log-ratio (B,), rejected log-ratio (B,)."""
    import torch.nn.functional as F

    if loss_type not in LOSS_TYPES:
        raise ValueError(f"trainer.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not beta > 0:
        raise ValueError(f"trainer.beta must be > 0, got {beta}")
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if loss_type == "ipo" or length_normalize:
        delta = chosen_ratio / chosen_len.clamp(min=1) - rejected_ratio / rejected_len.clamp(min=1)
    else:
        delta = chosen_ratio - rejected_ratio
    if loss_type == "ipo":
        loss = (delta - 1.0 / (2.0 * beta)) ** 2
    else:
        loss = -F.logsigmoid(beta * delta)
    return loss, chosen_ratio, rejected_ratio


def sft_loss(chosen_per_token, chosen_len):
    """Mean NLL per chosen completion token over the batch (a scalar)."""
    return -chosen_per_token.sum() / chosen_len.sum().clamp(min=1)


def dpo_batch_loss(model, batch, ref_chosen_logps, ref_rejected_logps, weights=None, *, beta: float,
                   loss_type: str = "sigmoid", length_normalize: bool = False, sft_weight: float = 0.0):
    """One batch (collate_pairs output) -> (scalar loss, detached stats dict of (B,) tensors)."""
    input_ids, attention_mask, completion_mask = batch
    logps, lengths, per_token = completion_logps(model, input_ids, attention_mask, completion_mask)
    B = input_ids.shape[0] // 2
    loss, chosen_ratio, rejected_ratio = preference_loss(
        logps[:B], logps[B:], ref_chosen_logps, ref_rejected_logps, lengths[:B], lengths[B:],
        beta=beta, loss_type=loss_type, length_normalize=length_normalize)
    total = loss.mean() if weights is None else (loss * weights).sum() / weights.sum()
    if sft_weight:
        total = total + sft_weight * sft_loss(per_token[:B], lengths[:B])
    stats = {"chosen_logratio": chosen_ratio.detach(), "rejected_logratio": rejected_ratio.detach(),
             "chosen_logps": logps[:B].detach(), "rejected_logps": logps[B:].detach()}
    return total, stats


def reward_metrics(chosen_ratio, rejected_ratio, beta: float) -> dict[str, float]:
    """Implicit-reward metrics of pairs, from (B,) log-ratios (policy - reference)."""
    chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
    return {"reward_margin": float((chosen_reward - rejected_reward).mean()),
            "reward_accuracy": float((chosen_reward > rejected_reward).float().mean()),
            "chosen_logp_shift": float(chosen_ratio.mean()), "rejected_logp_shift": float(rejected_ratio.mean())}
