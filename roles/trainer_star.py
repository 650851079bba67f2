"""The STaR trainer: LoRA SFT on the round's selected candidates.

TrainRequest(round, examples) -> AdapterReady(version=round,
path=RUN_DIR/adapters/v<round>, metrics). ``trainer.mode`` "restart" trains a
fresh LoRA on the base every round (as STaR does, against drift); "continue"
starts from the last adapter this trainer produced.

Guarantees:
  * An adapter folder appears only complete (train_sft writes to a temp folder
    and renames), so the generator never loads a half-written one.
  * Idempotent: a re-sent request for a round whose adapter already exists
    returns that adapter and its saved metrics without training again (also
    after a trainer restart: the last adapter is found on disk).
  * An empty example list does not train: it returns the previous adapter (or
    version 0, path "" = the base) with metrics {"skipped": 1}.
  * A NaN/inf loss raises (the wrapper replies Error); nothing is written and
    the previous adapter stays in service.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from constellation.config import Config
from constellation.messages import AdapterReady, TrainRequest
from roles.base import Role, set_torch_threads
from roles.generator_hf import read_base_path


class StarTrainer(Role):
    name = "trainer"
    accepts = (TrainRequest,)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        if cfg.trainer.mode not in ("restart", "continue"):
            raise ValueError(f'trainer.mode must be "restart" or "continue", got {cfg.trainer.mode!r}')
        self.adapters_dir = self.run_dir / "adapters"
        self.base_path: Path | None = None
        self.last_version, self.last_path = 0, ""  # the adapter in service (0, "" = base)
        self.trained_rounds = 0
        self.train_seconds = 0.0
        self.examples_seen = 0

    def setup(self) -> dict[str, Any]:
        set_torch_threads(self.cfg.trainer.threads)
        from roles.quant import check_quantization

        check_quantization(self.cfg.model.quantization, self.cfg.model.compute_dtype)  # at start-up, not mid-run
        self.base_path = read_base_path(self.run_dir)
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        done = sorted((int(m.group(1)), p) for p in self.adapters_dir.iterdir()
                      if (m := re.fullmatch(r"v(\d+)", p.name)) and (p / "adapter_config.json").exists())
        if done:  # restarted: continue from the newest finished adapter
            self.last_version, self.last_path = done[-1][0], str(done[-1][1])
        return {"base": str(self.base_path), "mode": self.cfg.trainer.mode, "last_version": self.last_version}

    def handle(self, msg: Any) -> AdapterReady:
        out_dir, cached = self._start_round(msg)
        if cached is not None:
            return cached
        if not msg.examples:
            return self._ready(msg, self.last_version, self.last_path, {"skipped": 1})

        from roles.lm import train_sft

        t = self.cfg.trainer
        init = self.last_path if t.mode == "continue" and self.last_path else None
        t0 = time.perf_counter()
        metrics = train_sft(self.base_path, msg.examples, out_dir, init_adapter=init, lora_r=t.lora_r,
                            lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, lora_targets=list(t.lora_targets),
                            lr=t.lr, epochs=t.epochs, max_seconds=t.max_seconds, batch_size=t.batch_size,
                            seed=self.cfg.run.seed * 1000 + msg.round,
                            quantization=self.cfg.model.quantization, compute_dtype=self.cfg.model.compute_dtype,
                            gradient_checkpointing=self.cfg.model.gradient_checkpointing)
        self.train_seconds += time.perf_counter() - t0
        self.trained_rounds += 1
        self.examples_seen += len(msg.examples)
        self.last_version, self.last_path = msg.round, str(out_dir)
        return self._ready(msg, msg.round, str(out_dir), metrics)

    def _start_round(self, msg: Any) -> tuple[Path, AdapterReady | None]:
        """Check a TrainRequest -> (its adapter folder, the reply when the round
        was already trained: a re-sent request gets that adapter and its saved
        metrics, without training again)."""
        if not isinstance(msg, TrainRequest):
            raise TypeError(f"{type(self).__name__} cannot handle {type(msg).__name__}; accepts {self.accepts}")
        if msg.round < 1:
            raise ValueError(f"TrainRequest {msg.request_id}: round must be >= 1 (0 is the base), got {msg.round}")
        out_dir = self.adapters_dir / f"v{msg.round}"
        if not (out_dir / "adapter_config.json").exists():
            return out_dir, None
        metrics_file = out_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        return out_dir, self._ready(msg, msg.round, str(out_dir), {**metrics, "cached": 1})

    @staticmethod
    def _ready(msg: TrainRequest, version: int, path: str, metrics: dict) -> AdapterReady:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        return AdapterReady(request_id=msg.request_id, version=version, path=path, metrics=clean)

    def stats(self) -> dict[str, float]:
        return {"done": float(self.examples_seen), "trained_rounds": float(self.trained_rounds),
                "per_second": self.examples_seen / self.train_seconds if self.train_seconds else 0.0,
                "adapter_version": float(self.last_version)}
