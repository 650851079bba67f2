"""generator.impl = "vllm": one vLLM engine in the generator process, with LoRA hot-swap.

The same interface as ``hf`` (GenerateRequest -> Candidates, LoadAdapter ->
AdapterLoaded, every candidate tagged with the adapter version that produced
it), served by a ``vllm.LLM`` engine that lives in this role's process (its
engine core runs in-process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so the
supervisor sees one process per role and no orphan can outlive it).

Weight flow: the base loads once. Each announced adapter version becomes a
``LoRARequest(f"v{version}", fresh integer id, path)``, loaded eagerly at
LoadAdapter (a broken or unservable adapter fails there, and the generator
keeps serving the previous version), and the previous adapter is removed from
the engine, so at most one adapter is held and memory stays flat over rounds.
Full weights never reload.

Start-up checks (READY fails with the reason, not mid-run): vLLM importable
(else: which extra or venv to install), ``generator.max_lora_rank`` one of
vLLM's ranks, the trainer's LoRA rank and target modules servable. Each
adapter's own ``adapter_config.json`` is checked again at LoadAdapter.

Sampling: ``SamplingParams(n=K, temperature, top_p, seed, stop=task.stop)``,
prompts as token ids encoded exactly as the hf generator and the trainer
encode them (prompting.prompt_ids: [bos] + prompt, or the chat turn of
``model.chat_template``), completions decoded by the same tokenizer and cut
at the first stop string as the hf generator cuts them (prompting.cut_at_stop). ``logprob`` is vLLM's
cumulative log-probability of the sampled tokens (eos included when sampled)
under the raw model (vLLM's default ``logprobs_mode = "raw_logprobs"``),
the hf generator's contract. Reproducible: a request's seed derives from its
sampling seed and candidate prefix, as in ``hf``. Not guaranteed: the same
candidates as ``hf`` for the same seed (different random streams and kernels).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from constellation.protocol.config import Config
from constellation.protocol.messages import AdapterLoaded, Candidate, GenerateRequest, LoadAdapter
from roles.generator_hf import GeneratorRole, read_base_path, request_seed

# Linear layers vLLM's LoRA serves in Llama-family decoders (Llama, Qwen2/3, Mistral): q/k/v are packed
# into qkv_proj and gate/up into gate_up_proj, which accept the separate peft names.
SERVABLE_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks (0.32)
INSTALL_HINT = ('generator.impl = "vllm" needs vLLM: on a GPU machine pip install -e ".[gpu]"; on CPU run '
                'scripts/make_vllm_venv.sh and set generator.python = ".venv-vllm/bin/python"')


class AdapterNotServable(ValueError):
    """An adapter (or the trainer's LoRA settings) that the vLLM engine cannot serve."""


def servable_problems(rank: int, targets: Any, max_lora_rank: int, modules_to_save: Any = None,
                      use_dora: bool = False) -> list[str]:
    """Everything that keeps vLLM from serving a LoRA of this shape ([] = servable)."""
    problems = []
    if rank > max_lora_rank:
        problems.append(f"rank {rank} > generator.max_lora_rank {max_lora_rank}")
    if isinstance(targets, str):
        problems.append(f"target_modules is the pattern {targets!r}; vLLM needs a list of module names")
    else:
        unknown = sorted(set(targets) - SERVABLE_MODULES)
        if unknown:
            problems.append(f"target modules {unknown} are not servable (vLLM serves {sorted(SERVABLE_MODULES)})")
    if modules_to_save:
        problems.append(f"modules_to_save {modules_to_save} (fully trained modules) cannot be hot-swapped")
    if use_dora:
        problems.append("DoRA adapters are not served by vLLM")
    return problems


def check_adapter_servable(adapter_dir: str | Path, max_lora_rank: int) -> None:
    """Reads ``adapter_dir/adapter_config.json`` (peft); raises AdapterNotServable naming the folder and
    every problem. Per-module ranks (``rank_pattern``) count towards the rank."""
    cfg_file = Path(adapter_dir) / "adapter_config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{adapter_dir} holds no peft adapter (no adapter_config.json)")
    c = json.loads(cfg_file.read_text())
    if c.get("peft_type", "LORA") != "LORA":
        raise AdapterNotServable(f"{adapter_dir}: peft_type {c.get('peft_type')!r} is not LORA")
    rank = max([int(c.get("r", 8)), *(int(r) for r in (c.get("rank_pattern") or {}).values())])
    problems = servable_problems(rank, c.get("target_modules") or [], max_lora_rank, c.get("modules_to_save"),
                                 bool(c.get("use_dora")))
    if problems:
        raise AdapterNotServable(f"adapter {adapter_dir} cannot be served by vLLM: " + "; ".join(problems))


def check_lora_settings(max_lora_rank: int, trainer_rank: int, trainer_targets: list[str]) -> None:
    """Start-up check of the config: the trainer's adapters will be servable."""
    if max_lora_rank not in VLLM_LORA_RANKS:
        raise AdapterNotServable(f"generator.max_lora_rank must be one of {VLLM_LORA_RANKS}, got {max_lora_rank}")
    problems = servable_problems(trainer_rank, trainer_targets, max_lora_rank)
    if problems:
        raise AdapterNotServable("the trainer's LoRA (trainer.lora_r, trainer.lora_targets) cannot be served by "
                                 "vLLM: " + "; ".join(problems))


class VllmGenerator(GeneratorRole):
    """One vLLM engine; each adapter version hot-swapped as a LoRARequest."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.llm = self.tokenizer = None
        self.lora = None  # the LoRARequest of the adapter being served (None = base)
        self.next_lora_id = 1  # vLLM ids must be > 0 and never reused for a different adapter

    def setup(self) -> dict[str, Any]:
        g = self.cfg.generator
        if not self.cfg.trainer.lora:
            raise ValueError("generator.impl = \"vllm\" serves LoRA adapters only; trainer.lora = false (full "
                             "fine-tuning) needs generator.impl = \"hf\"")
        check_lora_settings(g.max_lora_rank, self.cfg.trainer.lora_r, list(self.cfg.trainer.lora_targets))
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process
        try:
            import vllm
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        import torch

        from constellation.models.lm import load_tokenizer

        base = read_base_path(self.run_dir)
        self.tokenizer = load_tokenizer(base, self.cfg.model.chat_template)
        max_model_len = g.max_model_len or self.cfg.model.max_len
        # CPU only: (1) vLLM 0.32 crashes when a seeded request's prefill is split into chunks ("CPU Generator
        # does not use offset": it rewinds the per-request generator of a partial prefill, which CPU generators
        # cannot do); without chunked prefill no prompt is split, and seeded requests are our reproducibility.
        # (2) eager mode: no torch.compile at start-up. On a GPU both stay at vLLM's defaults (CUDA graphs).
        cpu_only = {} if torch.cuda.is_available() else {"enable_chunked_prefill": False, "enforce_eager": True}
        self.llm = vllm.LLM(model=str(base), tokenizer=str(base), enable_lora=True, max_lora_rank=g.max_lora_rank,
                            max_loras=1, max_cpu_loras=1, gpu_memory_utilization=g.gpu_memory_utilization,
                            max_model_len=max_model_len, dtype=self.cfg.model.compute_dtype, seed=self.cfg.run.seed,
                            **cpu_only)
        return {"base": str(base), "vllm": vllm.__version__, "adapter_version": self.version,
                "max_model_len": max_model_len, **self.kv_cache_info()}

    def kv_cache_info(self) -> dict[str, float]:
        """The KV cache the engine got: tokens and GiB (2 x layers x kv_heads x head_dim x dtype bytes per token)."""
        import torch

        vc = self.llm.llm_engine.vllm_config
        tokens = (vc.cache_config.num_gpu_blocks or 0) * vc.cache_config.block_size
        hf = vc.model_config.hf_config
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
        per_token = (2 * hf.num_hidden_layers * getattr(hf, "num_key_value_heads", hf.num_attention_heads)
                     * head_dim * torch.empty(0, dtype=vc.model_config.dtype).element_size())
        return {"kv_cache_tokens": tokens, "kv_cache_gib": round(tokens * per_token / 2**30, 3)}

    def candidates(self, req: GenerateRequest) -> list[Candidate]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from constellation.models.base_model import encode_example

        s = req.sampling
        stops = list(self.cfg.task.stop)
        # stop strings are matched on vLLM's detokenized text, so it detokenizes only when there are some
        params = SamplingParams(n=req.k, temperature=max(0.0, s.temperature), top_p=s.top_p,
                                max_tokens=s.max_new_tokens, logprobs=0, detokenize=bool(stops),
                                stop=stops or None, seed=request_seed(s.seed, req.candidate_prefix))
        prompts = [TokensPrompt(prompt_token_ids=encode_example(self.tokenizer, p.prompt, None)[0])
                   for p in req.problems]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        items = []
        for p, out in zip(req.problems, outs):
            for i, c in enumerate(sorted(out.outputs, key=lambda c: c.index)):
                text, logprob = self._completion(c, eos, stops)
                items.append(Candidate(id=f"{req.candidate_prefix}/{p.id}/{i}", problem_id=p.id, text=text,
                                       logprob=logprob, adapter_version=self.version))
        return items

    def _completion(self, c: Any, eos: int, stops: list[str]) -> tuple[str, float]:
        """One vLLM CompletionOutput -> (text, logprob), the hf generator's contract."""
        from constellation.models.prompting import cut_at_stop

        ids = [t for t in c.token_ids if t != eos]
        if stops and c.logprobs:
            per_token = [step[t].logprob for step, t in zip(c.logprobs, c.token_ids)]
            return cut_at_stop(self.tokenizer, ids, per_token, stops)
        return self.tokenizer.decode(ids, skip_special_tokens=True), float(c.cumulative_logprob or 0.0)

    def _load_adapter(self, msg: LoadAdapter) -> AdapterLoaded:
        from vllm.lora.request import LoRARequest

        t0 = time.perf_counter()
        path = "" if msg.version == 0 or not msg.path else msg.path
        if (msg.version if path else 0, path) == (self.version, self.adapter_path):
            return AdapterLoaded(request_id=msg.request_id, version=self.version, seconds=0.0)  # re-sent
        engine = self.llm.llm_engine
        new = None
        if path:
            try:
                check_adapter_servable(path, self.cfg.generator.max_lora_rank)
            except (FileNotFoundError, AdapterNotServable) as e:
                raise type(e)(f"LoadAdapter v{msg.version}: {e}; still serving v{self.version}") from e
            new = LoRARequest(f"v{msg.version}", self.next_lora_id, str(Path(path).resolve()))
            self.next_lora_id += 1
            if self.lora is not None:  # max_loras = 1: make room first; on failure below we are on the base
                engine.remove_lora(self.lora.lora_int_id)
                self.version, self.adapter_path, self.lora = 0, "", None
            try:
                engine.add_lora(new)  # eager: load errors surface here, and the first request pays no load
            except Exception as e:
                raise RuntimeError(f"LoadAdapter v{msg.version}: vLLM could not load {path}: {e}; "
                                   f"now serving the base (v0)") from e
        elif self.lora is not None:
            engine.remove_lora(self.lora.lora_int_id)
        self.lora, self.version, self.adapter_path = new, (msg.version if path else 0), path
        return AdapterLoaded(request_id=msg.request_id, version=self.version, seconds=time.perf_counter() - t0)

    def loras_held(self) -> int:
        return len(self.llm.llm_engine.list_loras())
