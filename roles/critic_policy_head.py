"""critic.impl = "policy_head": the policy's own base weights, frozen, with the
critic's own LoRA adapter and a scalar head.

Why: a separate reward-model backbone is a second model to build, size and
(on a GPU) hold in memory. This critic needs none: it reads the critic text
with the policy's tokenizer and base transformer (the folder in
RUN_DIR/base_model.txt, the same one the generator and trainer load) and
learns only a LoRA adapter of rank ``critic.lora_r`` on ``critic.lora_targets``
plus a linear head on the last token's hidden state. The policy's adapters are
never touched: the critic's LoRA is its own and trained only on verifier labels.

What it does not do: share one copy of the base weights with the trainer's
process. Each role is its own OS process here, so this role loads the base
weights once more (frozen; small next to a reward model with its own
optimizer state). Sharing a single GPU copy between trainer and critic needs
both in one process and belongs to the GPU memory plan.

Input: [bos] + the critic text's tokens, cut from the LEFT to
``critic.max_len`` tokens (the candidate and its held-out outputs come last),
right-padded; the head reads the hidden state of the last real token, which
under causal attention has seen the whole text.

Training, calibration, metrics, checkpoints (only the trainable LoRA and head
weights are saved) and restart are those of ``roles.critic.OnlineCritic``.
"""

from __future__ import annotations

import torch
from torch import nn

from roles.critic import OnlineCritic
from roles.generator_hf import read_base_path


class PolicyHeadNet(nn.Module):
    def __init__(self, backbone: nn.Module, hidden: int) -> None:
        super().__init__()
        self.backbone = backbone  # peft-wrapped base transformer (no LM head)
        self.head = nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, mask (B, T) -> logits (B,) on the CPU.

        With a 4-bit base on a GPU the backbone and head live there: inputs go
        to them, the logits come back (the online trainer keeps its labels on
        the CPU). The head reads float32 whatever the compute dtype."""
        dev = self.head.weight.device
        ids, mask = ids.to(dev), mask.to(dev)
        h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        last = mask.sum(1) - 1  # index of the last real token per row
        return self.head(h[torch.arange(len(ids), device=dev), last].float()).squeeze(-1).cpu()


class PolicyHeadCritic(OnlineCritic):
    """LoRA + scalar head on the policy's frozen base weights, trained online."""

    def build_net(self) -> nn.Module:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer

        c = self.cfg.critic
        path = read_base_path(self.run_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        from constellation.models.quant import load_base_causal_lm, prepare_for_lora

        quantization = self.cfg.model.quantization
        causal_lm = prepare_for_lora(load_base_causal_lm(path, quantization, self.cfg.model.compute_dtype, c.device),
                                     quantization, self.cfg.model.gradient_checkpointing)
        backbone = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.model
        for p in backbone.parameters():
            p.requires_grad_(False)
        names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
        missing = [t for t in c.lora_targets if t not in names]
        if missing:
            raise ValueError(f"critic.lora_targets {missing} are not modules of the base model {path}")
        lora = LoraConfig(r=c.lora_r, lora_alpha=2 * c.lora_r, lora_dropout=0.0,
                          target_modules=list(c.lora_targets))
        self.max_tokens = min(c.max_len, causal_lm.config.max_position_embeddings)
        net = PolicyHeadNet(get_peft_model(backbone, lora), causal_lm.config.hidden_size)
        net.head.to(causal_lm.device)  # the backbone's device (critic.device)
        return net

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        keep = self.max_tokens - len(bos)
        return bos + ids[max(0, len(ids) - keep):]

    def collate(self, seqs: list[list[int]]) -> tuple[torch.Tensor, ...]:
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        return ids, mask
