"""The DPO trainer: iterative DPO/IPO with LoRA on the coordinator's preference pairs.

TrainRequest(round, pairs) -> AdapterReady(version=round,
path=RUN_DIR/adapters/v<round>, metrics). The math is in roles/dpo.py, the
pairs come from constellation/pairs.py.

Iterative (M1 -> M2 -> M3): round t trains the adapter of round t-1 further
(round 1 a fresh LoRA), on pairs drawn from the candidates of the model in
service, i.e. M_{t-1}. ``trainer.mode`` does not apply: DPO always continues.

Reference model: no second copy. At the start of a round, before any
update, the trainer computes the log-probs of every pair under the model as
loaded -- M_{t-1}, which is the base in round 1 (a fresh LoRA is zero) --
and keeps those numbers; the policy then trains against them.

Self-judging (pairs.source = "self_judge"): the coordinator sends a
JudgeRequest before the round's TrainRequest; the trainer scores each
candidate with the model in service (base + the last adapter it produced):
  likelihood  (the tiny default model, which knows no instructions): the
              mean log-probability per token of the candidate + eos after the
              problem's own prompt, the policy's confidence in its answer.
  llm         (a model whose tokenizer has a chat template): a 0-5
              LLM-as-a-judge prompt, decoded greedily and read with
              constellation.pairs.parse_judgment; no clear score = None.
  ``pairs.judge = "auto"`` picks llm when the tokenizer has a chat template.

Guarantees:
  * An adapter folder appears only complete (lm.save_adapter); a re-sent
    request for a finished round returns it without training again.
  * An empty pair set (or one whose every pair is too long) does not train:
    the previous adapter stays in service, metrics {"skipped": 1}; logged.
  * A pair longer than model.max_len loses prompt tokens from the left, never
    completion tokens; a pair whose completion alone is too long is dropped
    and counted (n_too_long).
  * A NaN/inf loss raises FloatingPointError (the wrapper replies Error);
    nothing is written and the previous adapter stays in service.
Metrics per round: reward margin / accuracy and chosen / rejected log-prob
shifts (log pi - log pi_ref) over the last epoch, the same on held-out pairs
(problems kept out of training, pairs.holdout_frac) after training, pair
counts by source.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from constellation.config import Config
from constellation.messages import AdapterReady, JudgeItem, JudgeRequest, Judgments, PreferencePair, TrainRequest
from constellation.pairs import check_pairs_config, parse_judgment, split_holdout
from roles.trainer_star import StarTrainer

log = logging.getLogger("trainer")

JUDGE_PROMPT = (
    "Rate the following solution to the problem on a scale of 0 to 5, where 5 means certainly correct "
    "and 0 certainly wrong. Answer with 'Score: N'.\n\nProblem:\n{prompt}\n\nSolution:\n{text}")


class NoUsablePairs(ValueError):
    """No training pair fits max_len (or every weight is 0)."""


def train_dpo(model, tokenizer, pairs: list[PreferencePair], *, beta: float = 0.1, loss_type: str = "sigmoid",
              length_normalize: bool = False, sft_weight: float = 0.0, lr: float = 1e-4, epochs: int = 1,
              max_seconds: float = 0.0, batch_size: int = 8, max_len: int = 256, holdout_frac: float = 0.0,
              seed: int = 0) -> dict[str, float]:
    """Train the peft ``model`` in place on ``pairs``. Reference log-probs are
    those of the model as passed in. -> metrics. Raises NoUsablePairs (a
    ValueError) when no pair fits max_len, FloatingPointError on a non-finite
    loss (before the update of that step)."""
    import torch

    from roles.dpo import collate_shared, dpo_batch_loss, encode_pair, pair_logps, preference_loss, reward_metrics
    from roles.lm import optimizer_step, schedule_lr

    t0 = time.monotonic()
    train_pairs, held_pairs = split_holdout(pairs, holdout_frac, seed)
    encoded, weights, too_long, truncated = [], [], 0, 0
    for p in train_pairs + held_pairs:
        e = encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, max_len)
        too_long += e is None
        truncated += bool(e and e.prompt_truncated)
        encoded.append(e)
        weights.append(p.weight)
    n_train = len(train_pairs)
    train_idx = [i for i in range(n_train) if encoded[i] is not None and weights[i] > 0]
    held_idx = [i for i in range(n_train, len(encoded)) if encoded[i] is not None]
    if not train_idx:
        raise NoUsablePairs(f"train_dpo: none of {n_train} training pairs fits max_len {max_len}")

    def batches(idx: list[int], rng: random.Random | None) -> list[list[int]]:
        idx = list(idx)
        if rng:
            rng.shuffle(idx)
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]

    @torch.no_grad()
    def logps_of(idx: list[int]):
        model.eval()
        out = torch.zeros(len(encoded), 2)  # (pairs, [chosen, rejected])
        for b in batches(idx, None):
            chosen, rejected, _, _, _ = pair_logps(model, collate_shared([encoded[i] for i in b],
                                                                         tokenizer.pad_token_id))
            out[b] = torch.stack([chosen, rejected], -1)
        return out

    ref = logps_of(train_idx + held_idx)  # the reference: the model before this round's updates
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = math.ceil(len(train_idx) / batch_size) * max(1, epochs)
    rng = random.Random(seed)
    w = torch.tensor(weights, dtype=torch.float32)
    losses: list[float] = []
    last_epoch: list[tuple[Any, Any]] = []  # (chosen, rejected) log-ratios of the last epoch that ran a step
    step = 0
    for epoch in range(max(1, epochs)):
        this_epoch: list[tuple[Any, Any]] = []
        model.train()
        for b in batches(train_idx, rng):
            elapsed = time.monotonic() - t0
            if max_seconds and elapsed >= max_seconds and step > 0:
                break
            schedule_lr(opt, lr, step, total, elapsed, max_seconds)
            batch = collate_shared([encoded[i] for i in b], tokenizer.pad_token_id)
            loss, stats = dpo_batch_loss(model, batch, ref[b, 0], ref[b, 1], w[b], beta=beta, loss_type=loss_type,
                                         length_normalize=length_normalize, sft_weight=sft_weight)
            losses.append(optimizer_step(opt, params, loss, f"train_dpo: step {step} (lr {lr}, beta {beta})"))
            this_epoch.append((stats["chosen_logratio"], stats["rejected_logratio"]))
            step += 1
        last_epoch = this_epoch or last_epoch
        if max_seconds and time.monotonic() - t0 >= max_seconds:
            break  # out of time
    model.eval()
    metrics: dict[str, float] = {
        "loss_first": losses[0], "loss_last": sum(losses[-5:]) / len(losses[-5:]), "steps": step,
        "n_pairs": len(pairs), "n_train_pairs": len(train_idx), "n_heldout_pairs": len(held_idx),
        "n_too_long": too_long, "n_prompt_truncated": truncated}
    metrics.update(reward_metrics(torch.cat([c for c, _ in last_epoch]), torch.cat([r for _, r in last_epoch]), beta))
    if held_idx:
        now = logps_of(held_idx)[held_idx]
        for k, v in reward_metrics(now[:, 0] - ref[held_idx, 0], now[:, 1] - ref[held_idx, 1], beta).items():
            metrics[f"heldout_{k}"] = v
        # the held-out loss under the same objective, for a sanity check against training
        lens = torch.tensor([[len(encoded[i].chosen_ids), len(encoded[i].rejected_ids)] for i in held_idx])
        held_loss, _, _ = preference_loss(now[:, 0], now[:, 1], ref[held_idx, 0], ref[held_idx, 1], lens[:, 0],
                                          lens[:, 1], beta=beta, loss_type=loss_type, length_normalize=length_normalize)
        metrics["heldout_loss"] = float(held_loss.mean())
    for source, n in Counter(p.source for p in pairs).items():
        metrics[f"n_pairs_{source}"] = n
    newest = max(p.round for p in pairs)
    metrics["n_pairs_earlier_rounds"] = sum(p.round < newest for p in pairs)
    metrics["seconds"] = time.monotonic() - t0
    return metrics


def judge_likelihood(model, tokenizer, items: list[JudgeItem], batch_size: int = 32) -> list[float | None]:
    """Mean log-prob per token of each candidate (+ eos) after its problem's prompt."""
    import torch

    from roles.base_model import collate, encode_example
    from roles.dpo import completion_logps

    out: list[float | None] = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = [encode_example(tokenizer, it.prompt, it.text) for it in items[i:i + batch_size]]
            input_ids, mask, labels = collate(chunk, tokenizer.pad_token_id)
            logps, lengths, _ = completion_logps(model, input_ids, mask, (labels != -100).long())
            out += [float(x) for x in logps / lengths.clamp(min=1)]
    return out


def judge_llm(model, tokenizer, items: list[JudgeItem], batch_size: int = 32) -> list[float | None]:
    """0-5 LLM-as-a-judge scores, greedy, read by parse_judgment (None = no judgment)."""
    from roles.lm import sample

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": JUDGE_PROMPT.format(
        prompt=it.prompt, text=it.text)}], tokenize=False, add_generation_prompt=True) for it in items]
    answers = sample(model, tokenizer, prompts, k=1, temperature=0.0, max_new_tokens=16, batch_size=batch_size)
    return [parse_judgment(per[0][0]) for per in answers]


class DpoTrainer(StarTrainer):
    """StarTrainer's lifecycle (adapter folder, restart, re-sent rounds) with
    DPO rounds and self-judging instead of SFT."""

    accepts = (TrainRequest, JudgeRequest)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        t, p = cfg.trainer, cfg.pairs
        from roles.dpo import LOSS_TYPES

        if t.loss_type not in LOSS_TYPES:
            raise ValueError(f"trainer.loss_type must be one of {LOSS_TYPES}, got {t.loss_type!r}")
        if not t.beta > 0:
            raise ValueError(f"trainer.beta must be > 0, got {t.beta}")
        if t.sft_weight < 0:
            raise ValueError(f"trainer.sft_weight must be >= 0, got {t.sft_weight}")
        check_pairs_config(p.source, p.among, p.max_per_problem, p.min_margin, p.judge, p.mix_rounds, p.mix_decay,
                           p.holdout_frac)
        self._judge_model: tuple[str, Any, Any] | None = None  # (adapter path, model, tokenizer)

    def setup(self) -> dict[str, Any]:
        info = super().setup()
        info.pop("mode", None)  # DPO always continues from the last adapter
        return {**info, "loss_type": self.cfg.trainer.loss_type, "pairs_source": self.cfg.pairs.source}

    def handle(self, msg: Any) -> AdapterReady | Judgments:
        if isinstance(msg, JudgeRequest):
            return self._judge(msg)
        out_dir, cached = self._start_round(msg)
        if cached is not None:
            return cached
        if not msg.pairs:
            log.warning("round %d: no preference pairs; skipping training, adapter v%d stays in service",
                        msg.round, self.last_version)
            return self._ready(msg, self.last_version, self.last_path, {"skipped": 1, "n_pairs": 0})

        from roles.lm import load_lora_model, save_adapter

        t = self.cfg.trainer
        t0 = time.perf_counter()
        self._judge_model = None  # the judge's merged copy is stale after this round: free it before training
        seed = self.cfg.run.seed * 1000 + msg.round
        model, tokenizer = load_lora_model(self.base_path, self.last_path or None, lora_r=t.lora_r,
                                           lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                                           lora_targets=list(t.lora_targets), seed=seed,
                                           quantization=self.cfg.model.quantization,
                                           compute_dtype=self.cfg.model.compute_dtype,
                                           gradient_checkpointing=self.cfg.model.gradient_checkpointing)
        max_len = min(self.cfg.model.max_len, getattr(model.config, "max_position_embeddings", 1 << 30))
        try:
            metrics = train_dpo(model, tokenizer, msg.pairs, beta=t.beta, loss_type=t.loss_type,
                                length_normalize=t.length_normalize, sft_weight=t.sft_weight, lr=t.lr,
                                epochs=t.epochs, max_seconds=t.max_seconds, batch_size=t.batch_size,
                                max_len=max_len, holdout_frac=self.cfg.pairs.holdout_frac, seed=seed)
        except NoUsablePairs as e:  # every pair too long: like an empty set, logged and skipped
            log.warning("round %d: %s; skipping training, adapter v%d stays in service", msg.round, e,
                        self.last_version)
            return self._ready(msg, self.last_version, self.last_path, {"skipped": 1, "n_pairs": len(msg.pairs)})
        metrics["init_version"] = self.last_version
        save_adapter(model, out_dir, metrics)
        self.train_seconds += time.perf_counter() - t0
        self.trained_rounds += 1
        self.examples_seen += len(msg.pairs)
        self.last_version, self.last_path = msg.round, str(out_dir)
        return self._ready(msg, msg.round, str(out_dir), metrics)

    def _judge(self, msg: JudgeRequest) -> Judgments:
        from roles.lm import load_model

        if self._judge_model is None or self._judge_model[0] != self.last_path:
            model, tokenizer = load_model(self.base_path, self.last_path or None)
            self._judge_model = (self.last_path, model, tokenizer)
        _, model, tokenizer = self._judge_model
        method = self.cfg.pairs.judge
        if method == "auto":
            method = "llm" if getattr(tokenizer, "chat_template", None) else "likelihood"
        scores = (judge_llm if method == "llm" else judge_likelihood)(model, tokenizer, msg.items)
        return Judgments(request_id=msg.request_id, candidate_ids=[it.candidate_id for it in msg.items],
                         scores=scores, method=method)

