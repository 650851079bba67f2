"""The generator: samples K candidates per problem with transformers models on CPU.

Serves GenerateRequest -> Candidates and LoadAdapter -> AdapterLoaded. The base
model's folder is read from ``RUN_DIR/base_model.txt`` (written by
``launch.prepare`` before the roles start). A loaded adapter is merged into a
fresh copy of the base weights, so the previous adapter's model is dropped and
memory does not grow over rounds; every candidate carries the version of the
adapter that actually produced it (0 = base).

Sampling is reproducible: a request's seed is derived from its sampling seed
and its candidate prefix, so a re-sent request yields the same candidates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterLoaded, Candidate, GenerateRequest, LoadAdapter
from roles.base import set_torch_threads
from roles.generator import GeneratorRole, read_base_path, request_seed


class HfGenerator(GeneratorRole):
    """transformers sampling on CPU/GPU (own KV-cache loop for Llama shapes); hot-loads peft adapters."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.model = self.tokenizer = None
        self.base_path: Path | None = None

    def setup(self) -> dict[str, Any]:
        set_torch_threads(self.cfg.generator.threads)
        from constellation.models.lm import load_model

        self.base_path = read_base_path(self.run_dir)
        self.model, self.tokenizer = load_model(self.base_path)
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"base": str(self.base_path), "params": n_params, "adapter_version": self.version}

    def candidates(self, req: GenerateRequest) -> list[Candidate]:
        from constellation.models.lm import sample

        s = req.sampling
        outs = sample(self.model, self.tokenizer, [p.prompt for p in req.problems], k=req.k,
                      temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                      seed=request_seed(s.seed, req.candidate_prefix), batch_size=self.cfg.generator.batch_size)
        return [Candidate(id=f"{req.candidate_prefix}/{p.id}/{i}", problem_id=p.id, text=text, logprob=logprob,
                          adapter_version=self.version)
                for p, samples in zip(req.problems, outs) for i, (text, logprob) in enumerate(samples)]

    def _load_adapter(self, msg: LoadAdapter) -> AdapterLoaded:
        from constellation.models.lm import holds_trained_weights, load_model

        t0 = time.perf_counter()
        if msg.version == 0 or not msg.path:
            path = ""
        else:
            path = msg.path
            if not holds_trained_weights(path):
                raise FileNotFoundError(f"LoadAdapter v{msg.version}: {path} holds no peft adapter "
                                        f"(adapter_config.json) or full weights (config.json); "
                                        f"still serving v{self.version}")
        if (msg.version, path) != (self.version, self.adapter_path):  # a re-sent LoadAdapter changes nothing
            model, tokenizer = load_model(self.base_path, path or None)
            self.model, self.tokenizer = model, tokenizer  # the previous model is dropped here
            self.version, self.adapter_path = (msg.version if path else 0), path
        return AdapterLoaded(request_id=msg.request_id, version=self.version, seconds=time.perf_counter() - t0)
