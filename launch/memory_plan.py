"""The GPU memory plan: how generator, trainer and critic share one card.

    model_shape(config_json)            -> ModelShape (from a HF config.json dict)
    plan_memory(cfg, shape, total_bytes) -> [PlanItem] per process, bytes each
    check_plan(items, free_bytes)        -> None, or PlanDoesNotFit with the table
    gpu_memory_check(cfg, base_path, python) -> a one-line verdict; raises PlanDoesNotFit

Pure arithmetic (no torch): ``constellation up`` runs it before starting the
roles, with the card's free and total memory read by a child process
(``torch.cuda.mem_get_info``), and refuses to start with the numbers if the
plan does not fit. Without CUDA it says the check is skipped.

The estimates, per process (bytes; "tokens" = batch x sequence length):
- CUDA context: 0.5 GiB (driver, cuBLAS workspaces).
- generator vllm: ``gpu_memory_utilization`` x the card's total memory: vLLM
  reserves exactly that for weights, activations and the KV cache, and
  nothing more. generator hf: weights + a KV cache for ``batch_size``
  sequences of ``model.max_len``, both in ``model.compute_dtype``.
- trainer / critic base: NF4 = 0.5 byte per linear weight + the double-
  quantized constants (block 64, 8-bit absmax + 256-block fp32 second level:
  ~0.127 bit/weight); the rest (embeddings, norms; a tied LM head shares the
  embeddings) in float32, because peft's k-bit preparation upcasts them.
  Without quantization: every weight in ``model.compute_dtype``.
- Each role that shares the card counts: a role whose ``device`` is "cpu"
  (generator.device, trainer.device, critic.device) is left out; every
  other role is planned on the one card (several roles on one GPU each hold
  their own copy: they are separate processes).
- LoRA: r x (in + out) per adapted linear, 16 bytes per trainable parameter
  (float32 weight, gradient, two Adam moments).
- activations: with gradient checkpointing, each layer's input is kept
  (2 bytes x hidden per token per layer) plus one layer recomputed at a time
  (~34 bytes x hidden per token: Korthikanti et al. 2022 without the
  attention-score term, which SDPA/flash kernels do not store); without it,
  all layers at 34 bytes x hidden per token.
- trainer logits: tokens x vocab x 10 bytes (bf16 logits, their float32
  upcast in the loss, its gradient). The critic's scalar head has none.

Not guaranteed: allocator fragmentation and library workspaces vary; keep
the sum some hundred MiB under the free memory (the plan's ``margin``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
CUDA_CONTEXT = int(0.5 * GIB)
MARGIN = int(0.5 * GIB)
NF4_BYTES_PER_WEIGHT = 0.5 + 0.127 / 8
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Published shapes, so the README's arithmetic can be re-run without the weights
KNOWN_SHAPES = {"qwen3-4b": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                             "vocab_size": 151936, "tie_word_embeddings": True}}


class PlanDoesNotFit(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder linear."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_dims().values())

    def other_params(self) -> int:
        """Embeddings (+ an untied LM head) and norms."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    def lora_params(self, r: int, targets: list[str]) -> int:
        dims = self.linear_dims()
        return self.layers * sum(r * sum(dims[t]) for t in targets if t in dims)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def model_shape(c: dict) -> ModelShape:
    heads = c["num_attention_heads"]
    return ModelShape(hidden=c["hidden_size"], intermediate=c["intermediate_size"], layers=c["num_hidden_layers"],
                      heads=heads, kv_heads=c.get("num_key_value_heads") or heads,
                      head_dim=c.get("head_dim") or c["hidden_size"] // heads, vocab=c["vocab_size"],
                      tied=bool(c.get("tie_word_embeddings", False)))


@dataclass(frozen=True)
class PlanItem:
    process: str
    part: str
    bytes: int


def _base(shape: ModelShape, quantization: str, dtype: str = "float32") -> tuple[int, str]:
    if quantization == "nf4":
        return (int(shape.linear_params() * NF4_BYTES_PER_WEIGHT) + 4 * shape.other_params(),
                "NF4 linears + float32 embeddings/norms")
    return DTYPE_BYTES.get(dtype, 4) * (shape.linear_params() + shape.other_params()), f"{dtype} weights"


def _activations(shape: ModelShape, tokens: int, checkpointing: bool, dtype_bytes: int) -> int:
    per_layer = 34 * shape.hidden * tokens * dtype_bytes // 2
    if checkpointing:
        return shape.layers * dtype_bytes * shape.hidden * tokens + per_layer
    return shape.layers * per_layer


def _vllm_generator(cfg, shape: ModelShape, total_bytes: int) -> list[PlanItem]:
    g = cfg.generator
    return [PlanItem("generator", f"vLLM reserve {g.gpu_memory_utilization:.2f} x total",
                     int(g.gpu_memory_utilization * total_bytes))]


def _weights_and_kv_generator(cfg, shape: ModelShape, total_bytes: int) -> list[PlanItem]:
    dtype = cfg.model.compute_dtype
    kv = cfg.generator.batch_size * cfg.model.max_len * shape.kv_bytes_per_token(DTYPE_BYTES.get(dtype, 4))
    return [PlanItem("generator", *_base(shape, "none", dtype)[::-1]), PlanItem("generator", "KV cache", kv)]


def _lora_training(process: str, shape: ModelShape, base: tuple[int, str], section, max_len: int,
                   checkpointing: bool, dtype_bytes: int, head_params: int = 0) -> list[PlanItem]:
    """A process that trains a LoRA (+ a head of ``head_params``) on the base: ``section``
    is its config (trainer or critic: batch_size, lora_r, lora_targets)."""
    tokens = section.batch_size * max_len
    return [PlanItem(process, base[1], base[0]),
            PlanItem(process, f"LoRA r={section.lora_r} + {'head' if head_params else 'grads'} + Adam",
                     16 * (shape.lora_params(section.lora_r, list(section.lora_targets)) + head_params)),
            PlanItem(process, f"activations ({section.batch_size} x {max_len} tokens)",
                     _activations(shape, tokens, checkpointing, dtype_bytes))]


def _trainer(cfg, shape: ModelShape, base: tuple[int, str], dtype_bytes: int) -> list[PlanItem]:
    m = cfg.model
    return (_lora_training("trainer", shape, base, cfg.trainer, m.max_len, m.gradient_checkpointing, dtype_bytes)
            + [PlanItem("trainer", "logits + loss", 10 * cfg.trainer.batch_size * m.max_len * shape.vocab),
               PlanItem("trainer", "CUDA context", CUDA_CONTEXT)])


def _policy_head_critic(cfg, shape: ModelShape, base: tuple[int, str], dtype_bytes: int) -> list[PlanItem]:
    c = cfg.critic
    return (_lora_training("critic", shape, base, c, c.max_len, cfg.model.gradient_checkpointing, dtype_bytes,
                           head_params=shape.hidden)
            + [PlanItem("critic", "CUDA context", CUDA_CONTEXT)])


# What the plan knows of each implementation's card use, by its registered name.
# Any other generator (a plugin) is planned as weights + KV cache; any other
# critic as staying off the card (the small critic is a CPU model).
GENERATOR_PLANS = {"vllm": _vllm_generator}
CRITIC_PLANS = {"policy_head": _policy_head_critic}


def plan_memory(cfg, shape: ModelShape, total_bytes: int) -> list[PlanItem]:
    """-> what each process holds on the card, by part (``cfg`` is a constellation Config)."""
    dtype_bytes = DTYPE_BYTES.get(cfg.model.compute_dtype, 4)
    base = _base(shape, cfg.model.quantization, cfg.model.compute_dtype)
    items: list[PlanItem] = []
    if on_card(cfg.generator):
        generator = GENERATOR_PLANS.get(cfg.generator.impl, _weights_and_kv_generator)
        items += generator(cfg, shape, total_bytes) + [PlanItem("generator", "CUDA context", CUDA_CONTEXT)]
    if on_card(cfg.trainer):
        items += _trainer(cfg, shape, base, dtype_bytes)
    critic = CRITIC_PLANS.get(cfg.critic.impl)
    return items + (critic(cfg, shape, base, dtype_bytes) if critic and on_card(cfg.critic) else [])


def on_card(section) -> bool:
    """A role shares the card unless its config pins it to the CPU."""
    return getattr(section, "device", "auto") != "cpu"


def format_plan(items: list[PlanItem], free_bytes: int | None = None) -> str:
    lines = [f"  {it.process:<9} {it.part:<42} {it.bytes / GIB:6.2f} GiB" for it in items]
    total = sum(it.bytes for it in items)
    lines.append(f"  {'total':<9} {'(+ ' + f'{MARGIN / GIB:.1f} GiB margin)':<42} {total / GIB:6.2f} GiB")
    if free_bytes is not None:
        lines.append(f"  {'free':<9} {'on the card now':<42} {free_bytes / GIB:6.2f} GiB")
    return "\n".join(lines)


def check_plan(items: list[PlanItem], free_bytes: int) -> None:
    need = sum(it.bytes for it in items) + MARGIN
    if need > free_bytes:
        raise PlanDoesNotFit(f"the GPU memory plan needs {need / GIB:.2f} GiB but {free_bytes / GIB:.2f} GiB are "
                             f"free; lower generator.gpu_memory_utilization, the batch sizes or model.max_len, "
                             f"or set model.quantization = \"nf4\":\n{format_plan(items, free_bytes)}")


PROBE = ("import json, torch\n"
         "ok = torch.cuda.is_available()\n"
         "free, total = torch.cuda.mem_get_info() if ok else (0, 0)\n"
         "print(json.dumps({'cuda': ok, 'free': free, 'total': total,"
         " 'name': torch.cuda.get_device_name() if ok else ''}))")


def probe_gpu(python: str = sys.executable) -> dict:
    """The first CUDA device's free/total bytes, read in a child process (this one never imports torch)."""
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists():
        return {"cuda": False, "free": 0, "total": 0, "name": ""}  # no NVIDIA driver: skip torch's import time
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"GPU probe failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gpu_memory_check(cfg, base_path: Path, gpu: dict | None = None) -> str:
    """-> a one-line verdict for the console; raises PlanDoesNotFit with the table."""
    gpu = probe_gpu() if gpu is None else gpu
    if not gpu["cuda"]:
        return "GPU memory check skipped: no CUDA device (CPU run)"
    try:
        shape = model_shape(json.loads((Path(base_path) / "config.json").read_text()))
    except KeyError as e:  # not a decoder this arithmetic knows
        return f"GPU memory check skipped: {base_path}/config.json has no {e} (not a Llama-style decoder)"
    items = plan_memory(cfg, shape, gpu["total"])
    check_plan(items, gpu["free"])
    need = sum(it.bytes for it in items) + MARGIN
    return f"GPU memory plan fits {gpu['name']}: {need / GIB:.1f} of {gpu['free'] / GIB:.1f} GiB free"


def main(argv: list[str] | None = None) -> int:
    """python -m launch.memory_plan PRESET (qwen3-4b | CONFIG_JSON) TOTAL_GIB: prints the plan."""
    from constellation.protocol import config as config_mod

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(main.__doc__)
        return 2
    preset, model, total_gib = argv
    shape = model_shape(KNOWN_SHAPES[model] if model in KNOWN_SHAPES else json.loads(Path(model).read_text()))
    total = int(float(total_gib) * GIB)
    items = plan_memory(config_mod.load(preset, []), shape, total)
    print(format_plan(items))
    try:
        check_plan(items, total)  # the whole card as free: the best case
        print(f"fits in {total_gib} GiB")
        return 0
    except PlanDoesNotFit as e:
        print(str(e).splitlines()[0])
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
