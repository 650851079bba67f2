"""The generator: samples K candidates per problem with transformers models, on
``generator.device`` (auto = CUDA when present) in ``model.compute_dtype``.

Serves GenerateRequest -> Candidates and LoadAdapter -> AdapterLoaded. The base
model's folder is read from ``RUN_DIR/base_model.txt`` (written by
``launch.prepare`` before the roles start). A loaded adapter is merged into a
fresh copy of the base weights, so the previous adapter's model is dropped and
memory does not grow over rounds; every candidate carries the version of the
adapter that actually produced it (0 = base).

On a CUDA device the served copy is freed before the next one loads (two
copies of a 4B model do not fit next to the trainer on one card); should
that load fail, the base is loaded back and served as version 0.

Prompts are rendered as ``model.chat_template`` says (prompting.py), as the
trainers render them; completions end before the first of ``task.stop``.

Sampling is reproducible: a request's seed is derived from its sampling seed
and its candidate prefix, so a re-sent request yields the same candidates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterLoaded, Candidate, GenerateRequest, LoadAdapter
from constellation.models.lm import holds_trained_weights
from constellation.models.prompting import uses_chat
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
        self.base_path = read_base_path(self.run_dir)
        self.model, self.tokenizer = self._load(None)
        self._warm_adapter_path()
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"base": str(self.base_path), "params": n_params, "adapter_version": self.version,
                "device": str(self.model.device), "dtype": str(self.model.dtype).removeprefix("torch."),
                "chat": uses_chat(self.tokenizer)}

    def _load(self, adapter: str | None):
        from constellation.models.lm import load_model

        m = self.cfg.model
        return load_model(self.base_path, adapter, device=self.cfg.generator.device, dtype=m.compute_dtype,
                          chat_template=m.chat_template)

    @staticmethod
    def _warm_adapter_path() -> None:
        """Import now what the first LoadAdapter would (peft, and what it pulls
        in): that import was the first swap's worst case, 1.28 s on the tiny
        model, while the trainer waited for the generator (bench/adapter_swap.py)."""
        from peft import PeftModel  # noqa: F401
        from peft.tuners.lora import LoraModel  # noqa: F401

    def candidates(self, req: GenerateRequest) -> list[Candidate]:
        from constellation.models.lm import sample

        s = req.sampling
        outs = sample(self.model, self.tokenizer, [p.prompt for p in req.problems], k=req.k,
                      temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                      seed=request_seed(s.seed, req.candidate_prefix), batch_size=self.cfg.generator.batch_size,
                      stop=list(self.cfg.task.stop))
        return [Candidate(id=f"{req.candidate_prefix}/{p.id}/{i}", problem_id=p.id, text=text, logprob=logprob,
                          adapter_version=self.version)
                for p, samples in zip(req.problems, outs) for i, (text, logprob) in enumerate(samples)]

    def _load_adapter(self, msg: LoadAdapter) -> AdapterLoaded:
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
            self._swap(path)
            self.version, self.adapter_path = (msg.version if path else 0), path
        return AdapterLoaded(request_id=msg.request_id, version=self.version, seconds=time.perf_counter() - t0)

    def _swap(self, path: str) -> None:
        """Serve base + the adapter at ``path`` ("" = the base). On CPU the new
        copy loads before the old is dropped; on CUDA the old goes first."""
        import torch

        on_cuda = self.model is not None and self.model.device.type == "cuda"
        if on_cuda:
            self.model = None
            torch.cuda.empty_cache()
        try:
            self.model, self.tokenizer = self._load(path or None)  # the previous model is dropped here
        except Exception:
            if on_cuda:  # nothing is served now: back to the base, then report the failure
                self.model, self.tokenizer = self._load(None)
                self.version, self.adapter_path = 0, ""
            raise
