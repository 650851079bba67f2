"""The STaR trainer (trainer.impl = "star"): LoRA SFT on the round's selected candidates.

TrainRequest(round, examples) -> AdapterReady(version=round,
path=RUN_DIR/adapters/v<round>, metrics). ``trainer.mode`` "restart" trains a
fresh LoRA on the base every round (as STaR does, against drift); "continue"
starts from the last adapter this trainer produced. The lifecycle and its
guarantees (complete folders, idempotent rounds, restart) are AdapterTrainer's
(roles/trainer.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import TrainRequest
from roles.trainer import AdapterTrainer


class StarTrainer(AdapterTrainer):
    """STaR/RFT: LoRA SFT on selected candidates (completion-only loss)."""

    wants = "examples"

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        if cfg.trainer.mode not in ("restart", "continue"):
            raise ValueError(f'trainer.mode must be "restart" or "continue", got {cfg.trainer.mode!r}')

    def setup(self) -> dict[str, Any]:
        return {**super().setup(), "mode": self.cfg.trainer.mode}

    def train(self, msg: TrainRequest, out_dir: Path) -> dict[str, float]:
        from constellation.models.sft import SFTArgs, train_sft

        init = self.last_path if self.cfg.trainer.mode == "continue" and self.last_path else None
        return train_sft(self.base_path, msg.examples, out_dir, SFTArgs.from_config(self.cfg, msg.round, init),
                         on_step=self.steps)
