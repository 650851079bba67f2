"""The one training loop: warm start, LoRA SFT, DPO and the learned critic all
train through ``fit``.

    fit(model, epoch_batches, loss_fn, FitArgs(...)) -> FitResult(losses, steps, seconds)

A step: set the scheduled lr, compute the loss of the next batch, raise
FloatingPointError on a NaN/inf loss before any update, zero the gradients,
backward, clip the global gradient norm, AdamW step. The caller owns the data
(``epoch_batches(epoch)`` -> that epoch's batches, drawn when the epoch starts)
and the loss (``loss_fn(batch)``); this module owns the order of those calls,
so every trainer draws its random numbers in the same order it always has.

Budget: stop before a step once ``epochs`` passes are done (0 = no limit),
``max_steps`` steps are done (0 = no limit) or ``max_seconds`` have passed
since ``started`` (0 = no limit; at least one step runs whatever the clock
says). At least one of them must bound the loop.

Schedule ("warmup_cosine"): linear warmup over ``warmup_steps``, then cosine
decay to 5% of the peak over the budget: the fraction spent is the larger of
step / max_steps and elapsed / max_seconds (the ones that are set).
"constant" leaves the optimizer's lr alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

# (steps done, planned steps or 0 when only time bounds the loop, reported loss of the step just done)
FitProgress = Callable[[int, int, float], None] | None


@dataclass(frozen=True)
class FitStep:
    """What ``fit``'s ``on_step`` gets after each optimizer step (the trackers' curve, the roles' heartbeats)."""

    step: int  # steps done, from 1
    total: int  # args.max_steps, 0 when steps do not bound the loop
    loss: float  # the reported loss of this step
    lr: float  # the learning rate this step used
    grad_norm: float  # global L2 norm of the gradients before clipping
    elapsed: float  # seconds since fit's `started`
    spent: float  # fraction of the step or time budget used; 0 when only epochs bound the loop


FitStepHook = Callable[[FitStep], None] | None


@dataclass(frozen=True)
class FitArgs:
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (torch's defaults)
    epochs: int = 1  # passes over the data; 0 = no limit (max_steps or max_seconds stop the loop)
    max_steps: int = 0  # optimizer steps; 0 = no step budget
    max_seconds: float = 0.0  # wall-clock budget counted from fit's `started`; 0 = none
    schedule: Literal["warmup_cosine", "constant"] = "warmup_cosine"  # lr schedule, see the module docstring
    warmup_steps: int = 10  # linear warmup steps of "warmup_cosine"
    clip_norm: float = 1.0  # max global L2 norm of the gradients

    @classmethod
    def over_epochs(cls, lr: float, epochs: int, steps_per_epoch: int, max_seconds: float) -> FitArgs:
        """SFT and DPO: ``epochs`` passes (at least one) or ``max_seconds``,
        whichever ends first; warmup over ~10% of the planned steps, at most 10."""
        total = steps_per_epoch * max(1, epochs)
        return cls(lr=lr, epochs=max(1, epochs), max_steps=total, max_seconds=max_seconds,
                   warmup_steps=min(10, total // 10 + 1))

    def check(self) -> None:
        if self.epochs < 0 or self.max_steps < 0 or self.max_seconds < 0:
            raise ValueError(f"fit: negative budget: epochs={self.epochs}, max_steps={self.max_steps}, "
                             f"max_seconds={self.max_seconds}")
        if not (self.epochs or self.max_steps or self.max_seconds):
            raise ValueError("fit: no budget (epochs=0, max_steps=0, max_seconds=0): the loop would not end")
        if self.schedule == "warmup_cosine" and not (self.max_steps or self.max_seconds):
            raise ValueError(f"fit: schedule {self.schedule!r} decays over max_steps or max_seconds; both are 0")
        if self.schedule not in ("warmup_cosine", "constant"):
            raise ValueError(f'fit: schedule must be "warmup_cosine" or "constant", got {self.schedule!r}')


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)  # reported loss per step, in order
    seconds: float = 0.0  # wall time from `started` to the end of the loop

    @property
    def steps(self) -> int:
        return len(self.losses)

    def loss_summary(self, last: int = 5) -> dict[str, float]:
        """{loss_first: the first step's loss, loss_last: the mean of the last ``last`` steps};
        {} after zero steps (no data, or a budget spent before the first
        step): the caller's metrics then say ``steps: 0`` and carry no loss."""
        if not self.losses:
            return {}
        tail = self.losses[-last:]
        return {"loss_first": self.losses[0], "loss_last": sum(tail) / len(tail)}


def lr_factor(step: int, frac: float, warmup_steps: int, floor: float = 0.05) -> float:
    """Linear warmup over steps, then cosine decay over the elapsed fraction of
    the (time or step) budget down to ``floor`` times the peak."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def budget_spent(args: FitArgs, step: int, elapsed: float) -> float:
    """The fraction of the step or time budget used (the larger of the ones set)."""
    parts = []
    if args.max_steps:
        parts.append(step / args.max_steps)
    if args.max_seconds:
        parts.append(elapsed / args.max_seconds)
    return max(parts)


def optimizer_step(opt, params, loss, clip_norm: float = 1.0, where: str = "train", note: str = ""):
    """zero_grad + backward + clip + step -> the gradients' global norm before
    clipping (a 0-dim tensor). A NaN/inf loss raises
    FloatingPointError before any update (``where``: which step; ``note``:
    what the caller keeps, e.g. "no adapter written")."""
    import torch

    if not torch.isfinite(loss):
        raise FloatingPointError(f"{where}: loss {loss.item()}" + (f"; {note}" if note else ""))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    opt.step()
    return norm


def _fit_step(args: FitArgs, result: FitResult, lr: float, grad_norm: float, elapsed: float) -> FitStep:
    spent = budget_spent(args, result.steps, elapsed) if args.max_steps or args.max_seconds else 0.0
    return FitStep(result.steps, args.max_steps, result.losses[-1], lr, grad_norm, elapsed, min(1.0, spent))


_END = object()  # the end of the batch stream


def _batch_stream(epoch_batches: Callable[[int], Iterable[Any]], epochs: int) -> Iterator[Any]:
    """The batches of epoch 0, 1, ... (``epochs`` of them, or endless with 0),
    each epoch drawn only when its first batch is needed. An empty epoch ends the stream."""
    epoch = 0
    while not epochs or epoch < epochs:
        empty = True
        for batch in epoch_batches(epoch):
            empty = False
            yield batch
        if empty:
            return
        epoch += 1


def fit(model, epoch_batches: Callable[[int], Iterable[Any]], loss_fn: Callable[[Any], Any], args: FitArgs, *,
        started: float | None = None, progress: FitProgress = None, name: str = "fit",
        nan_note: str = "nothing updated", on_step: FitStepHook = None) -> FitResult:
    """Train ``model``'s parameters that require grad with AdamW -> FitResult.

    ``loss_fn(batch)`` -> the scalar loss tensor to minimize, or (that loss,
    the scalar to report for the step) when they differ. ``started``: a
    time.monotonic() value the time budget counts from (default: now), so a
    caller can count its own set-up (loading, reference log-probs) in the
    budget. ``progress(step, total, loss)`` and ``on_step(FitStep)`` after every step. The model is in
    train mode during the loop and in eval mode after it."""
    import torch

    args.check()
    t0 = time.monotonic() if started is None else started
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=args.betas, weight_decay=args.weight_decay)
    stream = _batch_stream(epoch_batches, args.epochs)
    result = FitResult()
    model.train()
    while True:
        step, elapsed = result.steps, time.monotonic() - t0
        if (args.max_steps and step >= args.max_steps) or (args.max_seconds and elapsed >= args.max_seconds
                                                           and step > 0):
            break
        batch = next(stream, _END)
        if batch is _END:
            break
        if args.schedule == "warmup_cosine":
            for group in opt.param_groups:
                group["lr"] = args.lr * lr_factor(step, budget_spent(args, step, elapsed), args.warmup_steps)
        out = loss_fn(batch)
        loss, shown = out if isinstance(out, tuple) else (out, out)
        norm = optimizer_step(opt, params, loss, args.clip_norm, f"{name}, step {step} (peak lr {args.lr})", nan_note)
        result.losses.append(shown.item())
        if progress:
            progress(result.steps, args.max_steps, result.losses[-1])
        if on_step:
            on_step(_fit_step(args, result, opt.param_groups[0]["lr"], float(norm), time.monotonic() - t0))
    model.eval()
    result.seconds = time.monotonic() - t0
    return result
