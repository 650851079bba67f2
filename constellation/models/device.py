"""Where a role's model lives and in which dtype.

    resolve_device("auto" | "cpu" | "cuda" | "cuda:N") -> torch.device
    torch_dtype("float32" | "bfloat16" | "float16")     -> torch.dtype
    autocast(device, dtype)                              -> a context manager

Every torch role reads its own ``device`` setting (generator.device,
trainer.device, critic.device) and the shared ``model.compute_dtype``.
"auto" is the first CUDA device when torch sees one, else the CPU, so a
config written on a laptop runs unchanged on a GPU box. Several roles may
name the same card: each is its own process with its own copy, and
launch/memory_plan.py adds them up before the run starts.

16-bit training: the weights are loaded in the compute dtype and the
forward pass runs under ``torch.autocast`` in that dtype; LoRA weights stay
float32 (peft's default), so optimizer updates are not rounded to 16 bits.
On the CPU, bfloat16 autocast works but is slow on most cores: the CPU
default stays float32.
"""

from __future__ import annotations

import contextlib

DEVICE_SPECS = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(spec: str):
    """A device setting -> torch.device; a CUDA device that is not there is refused by name."""
    import torch

    spec = (spec or "auto").strip()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = 0 if spec == "cuda" else spec[5:]
        if not str(index).isdigit():
            raise ValueError(f"device {spec!r}: expected one of {DEVICE_SPECS}")
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: torch sees no CUDA device (torch {torch.__version__}); "
                             f'use "auto" or "cpu"')
        if int(index) >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device(f"cuda:{index}")
    raise ValueError(f"device {spec!r}: expected one of {DEVICE_SPECS}")


def torch_dtype(name: str):
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)
    if dtype is None:
        raise ValueError(f"model.compute_dtype must be float32, bfloat16 or float16, got {name!r}")
    return dtype


def autocast(device, dtype_name: str):
    """Autocast to the compute dtype when it is 16-bit; a no-op context for float32."""
    import torch

    if dtype_name == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(dtype_name))
