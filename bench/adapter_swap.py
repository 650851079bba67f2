"""Adapter hot-swap latency and generator throughput, hf against vllm, on the same tiny model and prompts.

    .venv/bin/python bench/adapter_swap.py                 # both backends (vllm from .venv-vllm)
    .venv/bin/python bench/adapter_swap.py --swaps 10 --prompts 64 --k 8
    .venv/bin/python bench/adapter_swap.py --backends hf [--no-warm-up]   # hf alone; before/after its warm-up

Set-up (main venv): a Llama of the default tiny shape (hidden 128, 4 layers,
4 heads: 0.87M parameters; ``--hidden/--layers/--heads`` for larger ones;
untrained: the timing does not depend on the weights), DSL evaluation prompts, and two LoRA adapters of the trainer's
default shape (r 16 on all seven projections) made by ``constellation.models.sft.train_sft``.

Each backend then runs in its own child process with its own interpreter
(hf: this one; vllm: ``.venv-vllm/bin/python``, see scripts/make_vllm_venv.sh),
through the role interface the generator process serves:

- swap latency: from the trainer's AdapterReady (the adapter folder is on
  disk) to the first candidate produced with it = LoadAdapter + a
  GenerateRequest of one problem, k = 1, max 16 new tokens; alternating the two
  adapters under fresh versions, ``--swaps`` times; median and max.
- throughput: candidates per second of one GenerateRequest of ``--prompts``
  problems x ``--k`` samples, ``--new-tokens`` new tokens at most (the
  untrained model rarely stops early, so nearly every candidate is that
  long), after one warm-up request.

Prints one line per backend and the vllm/hf ratios. 1 torch thread each.
The hf generator imports peft at start-up (``_warm_adapter_path``), so no
swap pays that import; ``--no-warm-up`` measures it as it was before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from constellation.protocol.config import from_dict  # noqa: E402
from constellation.protocol.messages import GenerateRequest, LoadAdapter, Problem, Sampling  # noqa: E402


def build(work: Path, n_prompts: int, hidden: int, layers: int, heads: int) -> None:
    """Base folder, two adapters and prompts.json in ``work`` (main venv)."""
    import torch

    torch.set_num_threads(1)
    from constellation.protocol.config import ModelConfig, TaskConfig
    from constellation.protocol.messages import TrainExample
    from constellation.models import base_model, lm, sft
    from constellation.tasks import dsl as dsl_task
    from constellation.tasks.dsl import make_split

    tcfg = TaskConfig(n_labeled=10, n_train=10, n_eval=n_prompts)
    split = make_split(tcfg, seed=0)
    tokenizer = base_model.build_tokenizer(dsl_task.tokenizer_tokens())
    base = work / "base"
    mcfg = ModelConfig(hidden_size=hidden, layers=layers, heads=heads, intermediate_size=3 * hidden)
    base_model.build_tiny_model(mcfg, tokenizer, seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (work / "base_model.txt").write_text(str(base))
    examples = [TrainExample(problem_id=p.id, prompt=p.prompt, completion=p.reference) for p in split.labeled]
    for v in (1, 2):
        sft.train_sft(base, examples, work / "adapters" / f"v{v}", sft.SFTArgs(epochs=1, max_seconds=0, seed=v))
    (work / "prompts.json").write_text(json.dumps([p.prompt for p in split.eval]))
    (work / "params.json").write_text(json.dumps(sum(p.numel() for p in lm.load_model(base)[0].parameters())))


def child(impl: str, work: Path, swaps: int, k: int, new_tokens: int, warm_up: bool) -> None:
    """Runs under the backend's interpreter; prints one JSON line."""
    from constellation.runtime.registry import resolve_role

    cfg = from_dict({"generator": {"impl": impl, "gpu_memory_utilization": 0.15}})
    t0 = time.perf_counter()
    role = resolve_role("generator", impl)(cfg, work)
    if not warm_up:  # the generator as it was before it warmed up the adapter path at start-up
        role._warm_adapter_path = lambda: None
    role.setup()
    setup_seconds = time.perf_counter() - t0
    prompts = json.loads((work / "prompts.json").read_text())
    problems = [Problem(id=f"p{i}", task="dsl", prompt=p, data={}, reference="") for i, p in enumerate(prompts)]

    def generate(tag: str, batch: list[Problem], k: int, max_new: int):
        req = GenerateRequest(request_id=tag, problems=batch, k=k, sampling=Sampling(max_new_tokens=max_new, seed=1),
                              adapter_version=role.version, candidate_prefix=tag)
        return role.handle(req).items

    generate("warm", problems[:4], 2, 8)
    latencies = []
    for i in range(swaps):
        version = 10 + i
        t = time.perf_counter()  # AdapterReady arrived: the folder is complete on disk
        role.handle(LoadAdapter(request_id=f"l{i}", version=version, path=str(work / "adapters" / f"v{1 + i % 2}")))
        first = generate(f"s{i}", problems[:1], 1, 16)[0]
        latencies.append(time.perf_counter() - t)
        assert first.adapter_version == version, (first.adapter_version, version)
    generate("warm2", problems, 1, 8)
    t = time.perf_counter()
    items = generate("tp", problems, k, new_tokens)
    seconds = time.perf_counter() - t
    print("RESULT " + json.dumps({"impl": impl, "setup_s": setup_seconds, "swap_median_s": statistics.median(latencies),
                                  "swap_max_s": max(latencies), "candidates": len(items),
                                  "cand_per_s": len(items) / seconds, "seconds": seconds}), flush=True)


def run_child(python: str, impl: str, work: Path, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([python, __file__, "--child", impl, "--work", str(work), "--swaps", str(args.swaps),
                           "--k", str(args.k), "--new-tokens", str(args.new_tokens)]
                          + (["--no-warm-up"] if args.no_warm_up else []),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{impl} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--swaps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128, help="model width (MLP 3x); head_dim = hidden / heads")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--backends", default="hf,vllm", help="comma-separated: hf, vllm (hf alone needs no .venv-vllm)")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="hf: skip the generator's start-up import of peft (to measure what it saves)")
    ap.add_argument("--child", choices=["hf", "vllm"])
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        return child(args.child, Path(args.work), args.swaps, args.k, args.new_tokens, not args.no_warm_up)
    backends = [b for b in ("hf", "vllm") if b in args.backends.split(",")]
    if "vllm" in backends and not Path(args.vllm_python).exists():
        raise SystemExit(f"{args.vllm_python} missing: run scripts/make_vllm_venv.sh first (or --backends hf)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(work, args.prompts, args.hidden, args.layers, args.heads)
        n_params = json.loads((work / "params.json").read_text())
        pythons = {"hf": sys.executable, "vllm": args.vllm_python}
        results = {impl: run_child(pythons[impl], impl, work, args) for impl in backends}
    print(f"Llama {n_params / 1e6:.2f}M params (hidden {args.hidden}, {args.layers} layers), {args.prompts} prompts x k={args.k}, <= {args.new_tokens} new tokens, "
          f"{args.swaps} swaps, 1 thread")
    for r in results.values():
        print(f"  {r['impl']:<5} setup {r['setup_s']:5.1f} s | swap -> first candidate: median "
              f"{r['swap_median_s'] * 1000:6.0f} ms, max {r['swap_max_s'] * 1000:6.0f} ms | "
              f"throughput {r['cand_per_s']:7.1f} cand/s ({r['candidates']} in {r['seconds']:.1f} s)")
    if len(results) < 2:
        return
    hf, vl = results["hf"], results["vllm"]
    print(f"  vllm/hf: throughput x{vl['cand_per_s'] / hf['cand_per_s']:.2f}, "
          f"swap latency x{vl['swap_median_s'] / hf['swap_median_s']:.2f}")


if __name__ == "__main__":
    main()
