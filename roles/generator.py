"""What every generator role shares (``GeneratorRole``), and the run directory's
pointer to the base model (``read_base_path``), which every role that loads the
base reads."""

from __future__ import annotations

import abc
import time
import zlib
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterLoaded, Candidate, Candidates, GenerateRequest, LoadAdapter
from roles.base import Role


def read_base_path(run_dir: Path) -> Path:
    marker = Path(run_dir) / "base_model.txt"
    if not marker.exists():
        raise FileNotFoundError(f"{marker} is missing: the base model must be prepared before the roles start "
                                f"(python -m launch.prepare {run_dir})")
    path = Path(marker.read_text().strip())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{marker} points at {path}, which holds no model (no config.json)")
    return path


def request_seed(seed: int, candidate_prefix: str) -> int:
    """Stable across processes (unlike hash()): same request, same candidates."""
    return (seed * 1_000_003 + zlib.crc32(candidate_prefix.encode())) % (2**63)


class GeneratorRole(Role):
    """What every generator shares: the message dispatch, the k check, the
    candidate count and throughput, the adapter version being served.
    Subclasses implement ``candidates(req)`` and ``_load_adapter(msg)``."""

    name = "generator"
    accepts = (GenerateRequest, LoadAdapter)

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.version = 0  # adapter version being served
        self.adapter_path = ""
        self.generated = 0
        self.busy_seconds = 0.0

    def handle(self, msg: Any) -> Any:
        if isinstance(msg, GenerateRequest):
            if msg.k < 1:
                raise ValueError(f"GenerateRequest {msg.request_id}: k must be >= 1, got {msg.k}")
            t0 = time.perf_counter()
            items = self.candidates(msg)
            seconds = time.perf_counter() - t0
            self.generated += len(items)
            self.busy_seconds += seconds
            return Candidates(request_id=msg.request_id, items=items, seconds=seconds)
        if isinstance(msg, LoadAdapter):
            return self._load_adapter(msg)
        raise TypeError(f"{type(self).__name__} handles GenerateRequest and LoadAdapter, got {type(msg).__name__}")

    @abc.abstractmethod
    def candidates(self, req: GenerateRequest) -> list[Candidate]:
        """k candidates per problem of the request, ids f"{prefix}/{problem.id}/{i}"."""

    @abc.abstractmethod
    def _load_adapter(self, msg: LoadAdapter) -> AdapterLoaded:
        """Serve the announced adapter version (or the base for version 0)."""

    def stats(self) -> dict[str, float]:
        return {"done": float(self.generated),
                "per_second": self.generated / self.busy_seconds if self.busy_seconds > 0 else 0.0,
                "adapter_version": float(self.version)}
