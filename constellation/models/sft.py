"""Supervised fine-tuning for the trainers: STaR's SFT and the shared LoRA plumbing.

    train_sft(base_path, examples, out_dir, SFTArgs(...)) -> metrics; a peft LoRA
        adapter folder, or full weights with ``SFTArgs.full`` (trainer.lora = false)
    load_lora_model(base_path, init_adapter, LoraArgs(...)), load_full_model, save_adapter
        (shared with the DPO trainer)

The loss is on the completion tokens + eos only (labels are -100 on the
prompt); batches are length-bucketed; the budget is a step budget
(``max_steps``), or epochs, capped by ``max_seconds`` (constellation/models/fit.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from constellation.models.base_model import collate, encode_example, length_bucketed_batches
from constellation.models.fit import FitArgs, FitProgress, FitStepHook, fit
from constellation.models.lm import LLAMA_PROJECTIONS, load_model, load_tokenizer
from constellation.protocol.messages import TrainExample

if TYPE_CHECKING:
    from constellation.protocol.config import Config


@dataclass(frozen=True)
class LoraArgs:
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA alpha (the update is scaled by alpha / r)
    dropout: float = 0.0  # dropout on the LoRA input
    targets: tuple[str, ...] = LLAMA_PROJECTIONS  # module names LoRA adapts (empty = LLAMA_PROJECTIONS)
    quantization: str = "none"  # "nf4": a 4-bit base (QLoRA, constellation/models/quant.py)
    compute_dtype: str = "float32"  # dtype of the base's weights (and of the 4-bit layers' compute); 16-bit = autocast
    gradient_checkpointing: bool = False  # recompute activations in the backward pass
    device: str = "auto"  # where the base loads (constellation/models/device.py)
    chat_template: str = "auto"  # prompt rendering of the tokenizer (constellation/models/prompting.py)

    @classmethod
    def from_config(cls, cfg: Config) -> LoraArgs:
        t, m = cfg.trainer, cfg.model
        return cls(r=t.lora_r, alpha=t.lora_alpha, dropout=t.lora_dropout, targets=tuple(t.lora_targets),
                   quantization=m.quantization, compute_dtype=m.compute_dtype,
                   gradient_checkpointing=m.gradient_checkpointing, device=t.device, chat_template=m.chat_template)


@dataclass(frozen=True)
class SFTArgs:
    lora: LoraArgs = LoraArgs()  # the adapter's shape and how the base is loaded
    init_adapter: str | None = None  # continue this adapter (or full-weights) folder instead of the base
    full: bool = False  # full fine-tuning (every weight trains; a full-weights folder is saved) instead of LoRA
    lr: float = 2e-3  # peak learning rate
    epochs: int = 3  # passes over the examples (ignored when max_steps > 0)
    max_steps: int = 0  # step budget: exactly this many steps, batches drawn over repeated epochs; 0 = epochs
    max_seconds: float = 60.0  # time budget counted from the start of loading; 0 = none
    batch_size: int = 16  # examples per step
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    seed: int = 0  # LoRA init and batch order

    @classmethod
    def from_config(cls, cfg: Config, round_: int, init_adapter: str | None = None) -> SFTArgs:
        """The trainer's settings for one round; the seed is run.seed * 1000 + round."""
        t = cfg.trainer
        return cls(lora=LoraArgs.from_config(cfg), init_adapter=init_adapter, full=not t.lora, lr=t.lr,
                   epochs=t.epochs, max_steps=t.max_steps, max_seconds=t.max_seconds, batch_size=t.batch_size,
                   weight_decay=t.weight_decay, seed=cfg.run.seed * 1000 + round_)

    def fit_args(self, n_examples: int) -> FitArgs:
        """The fit budget: ``max_steps`` steps when set (over as many epochs as
        they take), else ``epochs`` passes; ``max_seconds`` caps either."""
        if self.max_steps > 0:
            return FitArgs(lr=self.lr, epochs=0, max_steps=self.max_steps, max_seconds=self.max_seconds,
                           weight_decay=self.weight_decay, warmup_steps=min(10, self.max_steps // 10 + 1))
        args = FitArgs.over_epochs(self.lr, self.epochs, math.ceil(n_examples / self.batch_size), self.max_seconds)
        return dataclasses.replace(args, weight_decay=self.weight_decay)


def train_sft(base_path: str | Path, examples: list[TrainExample], out_dir: Path, args: SFTArgs = SFTArgs(),
              progress: FitProgress = None, on_step: FitStepHook = None) -> dict[str, float]:
    """LoRA on the base (fresh, or continued from ``args.init_adapter``), or
    with ``args.full`` every weight, loss on the completion tokens + eos only.
    Stops after ``max_steps`` steps (or ``epochs`` passes) or ``max_seconds``
    (0 = no limit), whichever first; linear warmup + cosine decay over the
    planned steps. Saves the adapter to ``out_dir`` atomically
    (temp + rename; an existing out_dir is replaced). Raises
    FloatingPointError on a NaN/inf loss without writing anything. ->
    {loss_first, loss_last, steps, seconds, n_examples, n_too_long}."""
    from constellation.models.device import autocast

    if not examples:
        raise ValueError("train_sft: no examples")
    t0 = time.monotonic()
    if args.full:
        model, tokenizer = load_full_model(base_path, args.init_adapter, args.lora)
    else:
        model, tokenizer = load_lora_model(base_path, args.init_adapter, args.lora, seed=args.seed)
    max_len = getattr(model.config, "max_position_embeddings", 1 << 30)
    pairs = [encode_example(tokenizer, e.prompt, e.completion) for e in examples]
    kept = [p for p in pairs if len(p[0]) <= max_len]
    if not kept:
        raise ValueError(f"train_sft: all {len(pairs)} examples are longer than max_len {max_len}")
    rng = random.Random(args.seed)
    lengths = [len(ids) for ids, _ in kept]

    def loss_fn(batch: list[int]):  # labels are -100 on the prompt: the loss is completion + eos only
        input_ids, mask, labels = (t.to(model.device) for t in collate([kept[i] for i in batch],
                                                                       tokenizer.pad_token_id))
        with autocast(model.device, args.lora.compute_dtype):
            return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.float()

    fit_args = args.fit_args(len(kept))
    result = fit(model, lambda _epoch: length_bucketed_batches(lengths, args.batch_size, rng), loss_fn, fit_args,
                 started=t0, progress=progress, name="train_sft", nan_note="no adapter written", on_step=on_step)
    metrics = {**result.loss_summary(), "steps": result.steps, "seconds": time.monotonic() - t0,
               "n_examples": len(kept), "n_too_long": len(pairs) - len(kept)}
    save_adapter(model, out_dir, metrics)
    return metrics


def load_lora_model(base_path: str | Path, init_adapter: str | None = None, lora: LoraArgs = LoraArgs(),
                    seed: int = 0):
    """-> (peft model with a trainable LoRA, tokenizer): a fresh LoRA on the base
    (seeded init), or the adapter at ``init_adapter`` made trainable. The base
    is float32, or 4-bit NF4 with ``lora.quantization = "nf4"`` (constellation/models/quant.py);
    either way the saved adapter is a plain peft adapter."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from constellation.models.quant import load_base_causal_lm, prepare_for_lora

    tokenizer = load_tokenizer(base_path, lora.chat_template)
    base = prepare_for_lora(load_base_causal_lm(base_path, lora.quantization, lora.compute_dtype, lora.device),
                            lora.quantization, lora.gradient_checkpointing)
    torch.manual_seed(seed)
    if init_adapter:
        return PeftModel.from_pretrained(base, init_adapter, is_trainable=True), tokenizer
    return get_peft_model(base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=list(lora.targets or LLAMA_PROJECTIONS), task_type="CAUSAL_LM")), tokenizer


def load_full_model(base_path: str | Path, init: str | None = None, lora: LoraArgs = LoraArgs()):
    """-> (model with every weight trainable, tokenizer) for full fine-tuning:
    the base, or the full-weights folder ``init`` (``trainer.mode = "continue"``).
    A 4-bit base cannot be fully fine-tuned: only LoRA trains on NF4 weights."""
    if lora.quantization != "none":
        raise ValueError(f"trainer.lora = false (full fine-tuning) needs model.quantization = \"none\", "
                         f"got {lora.quantization!r}: 4-bit weights train only through LoRA")
    # float32 master weights on the trainer's device; a 16-bit compute_dtype runs under autocast (train_sft)
    model, tokenizer = load_model(base_path, init, device=lora.device, dtype="float32",
                                  chat_template=lora.chat_template)
    for p in model.parameters():
        p.requires_grad_(True)
    if lora.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def save_adapter(model, out_dir: str | Path, metrics: dict) -> None:
    """Adapter (or, for a plain model, full weights) + metrics.json to ``out_dir``, atomically: written to a temp
    folder, then renamed (an existing out_dir is replaced), so a reader never
    sees a half-written adapter."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps(metrics))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
