"""The generator: samples K candidates per problem with transformers models on CPU.

Serves GenerateRequest -> Candidates and LoadAdapter -> AdapterLoaded. The base
model's folder is read from ``RUN_DIR/base_model.txt`` (written by
``roles.prepare`` before the roles start). A loaded adapter is merged into a
fresh copy of the base weights, so the previous adapter's model is dropped and
memory does not grow over rounds; every candidate carries the version of the
adapter that actually produced it (0 = base).

Sampling is reproducible: a request's seed is derived from its sampling seed
and its candidate prefix, so a re-sent request yields the same candidates.
"""

from __future__ import annotations

import abc
import time
import zlib
from pathlib import Path
from typing import Any

from constellation.config import Config
from constellation.messages import AdapterLoaded, Candidate, Candidates, GenerateRequest, LoadAdapter
from roles.base import Role, set_torch_threads


def read_base_path(run_dir: Path) -> Path:
    marker = Path(run_dir) / "base_model.txt"
    if not marker.exists():
        raise FileNotFoundError(f"{marker} is missing: the base model must be prepared before the roles start "
                                f"(python -m roles.prepare {run_dir})")
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


class HfGenerator(GeneratorRole):
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.model = self.tokenizer = None
        self.base_path: Path | None = None

    def setup(self) -> dict[str, Any]:
        set_torch_threads(self.cfg.generator.threads)
        from roles.lm import load_model

        self.base_path = read_base_path(self.run_dir)
        self.model, self.tokenizer = load_model(self.base_path)
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"base": str(self.base_path), "params": n_params, "adapter_version": self.version}

    def candidates(self, req: GenerateRequest) -> list[Candidate]:
        from roles.lm import sample

        s = req.sampling
        outs = sample(self.model, self.tokenizer, [p.prompt for p in req.problems], k=req.k,
                      temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                      seed=request_seed(s.seed, req.candidate_prefix), batch_size=self.cfg.generator.batch_size)
        return [Candidate(id=f"{req.candidate_prefix}/{p.id}/{i}", problem_id=p.id, text=text, logprob=logprob,
                          adapter_version=self.version)
                for p, samples in zip(req.problems, outs) for i, (text, logprob) in enumerate(samples)]

    def _load_adapter(self, msg: LoadAdapter) -> AdapterLoaded:
        from roles.lm import load_model

        t0 = time.perf_counter()
        if msg.version == 0 or not msg.path:
            path = ""
        else:
            path = msg.path
            if not (Path(path) / "adapter_config.json").exists():
                raise FileNotFoundError(f"LoadAdapter v{msg.version}: {path} holds no peft adapter "
                                        f"(no adapter_config.json); still serving v{self.version}")
        if (msg.version, path) != (self.version, self.adapter_path):  # a re-sent LoadAdapter changes nothing
            model, tokenizer = load_model(self.base_path, path or None)
            self.model, self.tokenizer = model, tokenizer  # the previous model is dropped here
            self.version, self.adapter_path = (msg.version if path else 0), path
        return AdapterLoaded(request_id=msg.request_id, version=self.version, seconds=time.perf_counter() - t0)
