"""What every trainer role shares (``AdapterTrainer``): one adapter folder per
round, restart from the newest finished adapter, re-sent rounds answered from
disk, and the training data it declares in READY.

A trainer declares the data it wants with ``wants`` ("examples": selected
(prompt, completion) pairs for SFT; "pairs": preference pairs), and the
coordinator builds exactly that: it never asks which implementation it talks to.

Guarantees of every subclass:
  * An adapter folder appears only complete (written to a temp folder and
    renamed), so the generator never loads a half-written one.
  * Idempotent: a re-sent request for a round whose adapter already exists
    returns that adapter and its saved metrics without training again (also
    after a trainer restart: the last adapter is found on disk).
  * No data does not train: the previous adapter stays in service (version 0,
    path "" = the base) with metrics {"skipped": 1}.
  * A NaN/inf loss raises (the wrapper replies Error); nothing is written and
    the previous adapter stays in service.
"""

from __future__ import annotations

import abc
import json
import re
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from constellation.models.lm import holds_trained_weights
from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterReady, TrainRequest
from roles.base import Role, set_torch_threads
from roles.generator import read_base_path
from roles.step_log import StepLog

TrainingData = Literal["examples", "pairs"]


class AdapterTrainer(Role):
    """Subclasses set ``wants`` and implement ``train(msg, out_dir) -> metrics | None``
    (None: nothing usable to train on; the previous adapter stays)."""

    name = "trainer"
    accepts = (TrainRequest,)
    wants: ClassVar[TrainingData]

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.adapters_dir = self.run_dir / "adapters"
        self.base_path: Path | None = None
        self.last_version, self.last_path = 0, ""  # the adapter in service (0, "" = base)
        self.trained_rounds = 0
        self.train_seconds = 0.0
        self.items_seen = 0
        self.steps = StepLog()  # subclasses pass it to their fit as on_step: heartbeats and the round's curve

    def setup(self) -> dict[str, Any]:
        set_torch_threads(self.cfg.trainer.threads)
        from constellation.models.quant import check_quantization

        check_quantization(self.cfg.model.quantization, self.cfg.model.compute_dtype)  # at start-up, not mid-run
        self.base_path = read_base_path(self.run_dir)
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        done = sorted((int(m.group(1)), p) for p in self.adapters_dir.iterdir()
                      if (m := re.fullmatch(r"v(\d+)", p.name)) and holds_trained_weights(p))
        if done:  # restarted: continue from the newest finished adapter
            self.last_version, self.last_path = done[-1][0], str(done[-1][1])
        return {"base": str(self.base_path), "wants": self.wants, "last_version": self.last_version}

    def handle(self, msg: Any) -> Any:
        out_dir, cached = self._start_round(msg)
        if cached is not None:
            return cached
        data = msg.examples if self.wants == "examples" else msg.pairs
        t0 = time.perf_counter()
        self.steps.start()
        try:
            metrics = self.train(msg, out_dir) if data else None
        finally:
            curve = self.steps.finish()
        if metrics is None:
            return self._ready(msg, self.last_version, self.last_path, {"skipped": 1, f"n_{self.wants}": len(data)})
        self.train_seconds += time.perf_counter() - t0
        self.trained_rounds += 1
        self.items_seen += len(data)
        self.last_version, self.last_path = msg.round, str(out_dir)
        return self._ready(msg, msg.round, str(out_dir), metrics, curve)

    @abc.abstractmethod
    def train(self, msg: TrainRequest, out_dir: Path) -> dict[str, float] | None:
        """Train this round's adapter into ``out_dir`` -> metrics, or None to skip."""

    def _start_round(self, msg: Any) -> tuple[Path, AdapterReady | None]:
        """Check a TrainRequest -> (its adapter folder, the reply when the round
        was already trained: a re-sent request gets that adapter and its saved
        metrics, without training again)."""
        if not isinstance(msg, TrainRequest):
            raise TypeError(f"{type(self).__name__} cannot handle {type(msg).__name__}; accepts {self.accepts}")
        if msg.round < 1:
            raise ValueError(f"TrainRequest {msg.request_id}: round must be >= 1 (0 is the base), got {msg.round}")
        out_dir = self.adapters_dir / f"v{msg.round}"
        if not holds_trained_weights(out_dir):
            return out_dir, None
        metrics_file = out_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        return out_dir, self._ready(msg, msg.round, str(out_dir), {**metrics, "cached": 1})

    @staticmethod
    def _ready(msg: TrainRequest, version: int, path: str, metrics: dict, curve: list | None = None) -> AdapterReady:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        return AdapterReady(request_id=msg.request_id, version=version, path=path, metrics=clean, curve=curve or [])

    def stats(self) -> dict[str, float]:
        return {"done": float(self.items_seen), "trained_rounds": float(self.trained_rounds),
                "per_second": self.items_seen / self.train_seconds if self.train_seconds else 0.0,
                "adapter_version": float(self.last_version), **self.steps.stats()}
