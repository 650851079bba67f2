"""The DPO trainer: iterative DPO/IPO with LoRA on the coordinator's preference pairs.

TrainRequest(round, pairs) -> AdapterReady(version=round,
path=RUN_DIR/adapters/v<round>, metrics). The math is in constellation/models/dpo.py, the
pairs come from constellation/algorithms/pairs.py.

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
              constellation.algorithms.pairs.parse_judgment; no clear score = None.
  ``pairs.judge = "auto"`` picks llm when the tokenizer has a chat template.

Guarantees:
  * An adapter folder appears only complete (sft.save_adapter); a re-sent
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
from pathlib import Path
from typing import Any

from constellation.algorithms.pairs import check_pairs_config
from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterReady, JudgeRequest, Judgments, TrainRequest
from roles.trainer import AdapterTrainer

log = logging.getLogger("trainer")


class DpoTrainer(AdapterTrainer):
    """Iterative DPO/IPO with LoRA on preference pairs (constellation.algorithms.pairs)."""

    accepts = (TrainRequest, JudgeRequest)
    wants = "pairs"

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        t, p = cfg.trainer, cfg.pairs
        from constellation.models.dpo import LOSS_TYPES

        if not t.lora:
            raise ValueError("trainer.impl = \"dpo\" trains LoRA adapters only; trainer.lora = false "
                             "(full fine-tuning) is for trainer.impl = \"star\"")
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
        # DPO always continues from the last adapter: trainer.mode does not apply
        return {**super().setup(), "loss_type": self.cfg.trainer.loss_type, "pairs_source": self.cfg.pairs.source}

    def handle(self, msg: Any) -> AdapterReady | Judgments:
        if isinstance(msg, JudgeRequest):
            return self._judge(msg)
        return super().handle(msg)

    def train(self, msg: TrainRequest, out_dir: Path) -> dict[str, float] | None:
        from constellation.models.device import autocast
        from constellation.models.dpo import DPOArgs, NoUsablePairs, train_dpo
        from constellation.models.sft import LoraArgs, load_lora_model, save_adapter

        self._judge_model = None  # the judge's merged copy is stale after this round: free it before training
        args = DPOArgs.from_config(self.cfg, msg.round)
        model, tokenizer = load_lora_model(self.base_path, self.last_path or None, LoraArgs.from_config(self.cfg),
                                           seed=args.seed)
        try:  # a 16-bit model.compute_dtype: forward (and its backward) under autocast
            with autocast(model.device, self.cfg.model.compute_dtype):
                metrics = train_dpo(model, tokenizer, msg.pairs, args, on_step=self.steps)  # max_len capped by the model
        except NoUsablePairs as e:  # every pair too long: like an empty set, logged and skipped
            log.warning("round %d: %s; skipping training, adapter v%d stays in service", msg.round, e,
                        self.last_version)
            return None
        metrics["init_version"] = self.last_version
        save_adapter(model, out_dir, metrics)
        return metrics

    def _judge(self, msg: JudgeRequest) -> Judgments:
        from constellation.models.judge import judge_likelihood, judge_llm
        from constellation.models.lm import load_model

        if self._judge_model is None or self._judge_model[0] != self.last_path:
            m = self.cfg.model
            model, tokenizer = load_model(self.base_path, self.last_path or None, device=self.cfg.trainer.device,
                                          dtype=m.compute_dtype, chat_template=m.chat_template)
            self._judge_model = (self.last_path, model, tokenizer)
        _, model, tokenizer = self._judge_model
        method = self.cfg.pairs.judge
        if method == "auto":
            method = "llm" if getattr(tokenizer, "chat_template", None) else "likelihood"
        scores = (judge_llm if method == "llm" else judge_likelihood)(model, tokenizer, msg.items)
        return Judgments(request_id=msg.request_id, candidate_ids=[it.candidate_id for it in msg.items],
                         scores=scores, method=method)

