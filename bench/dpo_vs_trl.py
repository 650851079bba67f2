"""Our DPO training step vs TRL's DPOTrainer step: time and memory.

    python bench/dpo_vs_trl.py [--steps 30] [--batch 16]

Same tiny model (the default 0.87M-parameter Llama shape, random weights:
speed does not depend on what it learned), same LoRA (trainer defaults), same
DSL pairs (prompt = a real task prompt, chosen = its reference program,
rejected = another problem's program), same batch size, 1 torch thread.

A step = policy forward on chosen + rejected, DPO sigmoid loss against
reference log-probs precomputed once (our trainer's reference; TRL with
``precompute_ref_log_probs=True`` gets the same numbers in the batch),
backward, grad-norm clip 1, AdamW step. TRL's step is
``trainer.training_step`` (its own loss and metrics code) + the same clip and
optimizer step. The two alternate step by step after 3 warm-up steps each;
the printed ratio is median(ours) / median(TRL), below 1 = ours faster.
TRL's default mode (a reference forward pass in every step, adapter copy
"ref") is timed too, for information.

Memory: each side runs again in its own fresh process; after 2 warm-up
steps (optimizer state, one-time allocations) the figure is the peak RSS
growth over 10 steps (VmHWM after them minus VmRSS before, from
/proc/self/status, peak reset through /proc/self/clear_refs): a step's
activations and gradients, not imports, weights or optimizer state. glibc's
mmap threshold is fixed in those processes so that freed tensors leave RSS;
the median of 3 processes per side is printed.
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


def _setup(batch: int, tmp: Path, seed: int = 0):
    import torch

    from constellation.protocol.config import ModelConfig, TaskConfig, TrainerConfig
    from constellation.models import base_model, sft
    from constellation.tasks import dsl as dsl_task
    from constellation.tasks.dsl import make_split

    torch.set_num_threads(1)
    tcfg, mcfg, tr = TaskConfig(n_labeled=0, n_train=batch * 4, n_eval=0), ModelConfig(), TrainerConfig()
    tokenizer = base_model.build_tokenizer(dsl_task.tokenizer_tokens())
    base = tmp / "base"
    if not (base / "config.json").exists():
        base_model.build_tiny_model(mcfg, tokenizer, seed).save_pretrained(base)
        tokenizer.save_pretrained(base)
    problems = make_split(tcfg, seed).train
    rows = [(p.prompt, p.reference, problems[(i + 1) % len(problems)].reference) for i, p in enumerate(problems)]
    rows = [r for r in rows if r[1] != r[2]][:batch]

    def lora():
        model, tok = sft.load_lora_model(base, None, sft.LoraArgs(r=tr.lora_r, alpha=tr.lora_alpha,
                                                                targets=tuple(tr.lora_targets)), seed=seed)
        return model, tok

    return rows, lora, tr.lr


def ours_stepper(rows, lora, lr):
    import torch

    from constellation.models import dpo
    from constellation.models.fit import optimizer_step

    model, tok = lora()
    enc = [dpo.encode_pair(tok, p, c, r, 256) for p, c, r in rows]
    batch = dpo.collate_shared(enc, tok.pad_token_id)
    with torch.no_grad():
        chosen, rejected, _, _, _ = dpo.pair_logps(model, batch)
    ref = torch.cat([chosen, rejected])  # TRL's layout: chosen rows first
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    B = len(enc)

    def step():
        loss, _ = dpo.dpo_batch_loss(model, batch, ref[:B], ref[B:], beta=0.1)
        optimizer_step(opt, params, loss, where="bench")

    return step, (enc, tok, ref)


def trl_stepper(rows, lora, lr, tmp: Path, precompute: bool, shared):
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    enc, _, ref = shared
    model, tok = lora()
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])
    args = DPOConfig(output_dir=str(tmp / "trl"), beta=0.1, loss_type=["sigmoid"], learning_rate=lr,
                     weight_decay=0.0, per_device_train_batch_size=len(rows), report_to="none", use_cpu=True,
                     max_length=None, precompute_ref_log_probs=False, dataset_num_proc=None)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which we do not run
    batch = trainer.data_collator([{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids,
                                    "rejected_ids": e.rejected_ids} for e in enc])
    if precompute:  # the same reference numbers our step uses, in TRL's precomputed-reference columns
        trainer.precompute_ref_logps = True
        B = len(enc)
        batch["ref_chosen_logps"], batch["ref_rejected_logps"] = ref[:B], ref[B:]
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def step():
        trainer.training_step(trainer.model, batch)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(side: str, batch: int, tmp: Path) -> None:
    rows, lora, lr = _setup(batch, tmp)
    step, shared = ours_stepper(rows, lora, lr)
    if side != "ours":
        step = trl_stepper(rows, lora, lr, tmp, precompute=side == "trl", shared=shared)
    for _ in range(2):  # one-time allocations (optimizer state, lazy kernels) are not a step's memory
        step()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    for _ in range(10):
        step()
    print(json.dumps({"peak_growth_mb": (_rss_kb("VmHWM") - before) / 1024}))


def _memory(side: str, batch: int, tmp: Path) -> float:
    # a fixed mmap threshold: every large tensor is mmap'ed and returned on free, so RSS follows the live
    # tensors (glibc's adaptive threshold otherwise keeps freed blocks and makes the figure noisy)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "--memory-child", side, "--batch", str(batch), "--tmp", str(tmp)],
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth_mb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--memory-child", choices=["ours", "trl", "trl_ref_forward"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(a.memory_child, a.batch, Path(a.tmp))
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows, lora, lr = _setup(a.batch, tmp)
        ours, shared = ours_stepper(rows, lora, lr)
        sides = {"ours": ours, "trl": trl_stepper(rows, lora, lr, tmp, True, shared),
                 "trl_ref_forward": trl_stepper(rows, lora, lr, tmp, False, shared)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for i in range(a.steps + 3):
            for name, step in sides.items():
                t0 = time.perf_counter()
                step()
                if i >= 3:
                    times[name].append(time.perf_counter() - t0)
        mem = {name: statistics.median(_memory(name, a.batch, tmp) for _ in range(3)) for name in sides}
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    n_tokens = sum(len(p) + len(c) + len(r) for p, c, r in rows)
    print(f"batch {len(rows)} pairs (~{n_tokens} chars), {a.steps} alternating steps, 1 thread")
    for name in sides:
        print(f"  {name:16s} median step {med[name]:7.1f} ms   peak RSS growth over 10 steps {mem[name]:6.1f} MB")
    print(f"ratio ours/TRL (both with precomputed reference log-probs): {med['ours'] / med['trl']:.2f}")
    print(f"ratio ours/TRL with a reference forward per step: {med['ours'] / med['trl_ref_forward']:.2f}")


if __name__ == "__main__":
    main()
