"""critic.impl = "small" (also "learned", its first name): the byte-level
network of constellation/models/critic_net.py, with weights of its own,
trained online by ``OnlineCritic`` (roles/critic.py)."""

from __future__ import annotations

import torch
from torch import nn

from constellation.models.critic_net import PATCH, critic_net, encode_text, pad_batch
from roles.critic import OnlineCritic


class SmallCritic(OnlineCritic):
    """Own tiny byte-level transformer + scalar head, trained online on verifier labels."""

    def build_net(self) -> nn.Module:
        c = self.cfg.critic
        assert c.max_len >= 2 * PATCH, f"critic.max_len={c.max_len} too small"
        return critic_net(c.hidden_size, c.layers, c.heads, c.max_len).to(self.device)

    def encode(self, text: str) -> list[int]:
        return encode_text(text, self.cfg.critic.max_len)

    def collate(self, seqs: list[list[int]]) -> tuple[torch.Tensor, ...]:
        return pad_batch(seqs)


LearnedCritic = SmallCritic  # critic.impl = "learned", the name of the walking constellation
