"""4-bit QLoRA loading: the base in bitsandbytes NF4, LoRA adapters in peft.

    check_quantization(quantization, compute_dtype)   -> the torch dtype name; ValueError on a bad value
    load_base_causal_lm(path, quantization, compute_dtype) -> a causal LM, frozen when quantized
    prepare_for_lora(model, quantization, gradient_checkpointing) -> the model ready for get_peft_model

``model.quantization = "nf4"`` loads every linear layer of the base (not the
embeddings, the norms or, for a tied model, the LM head) as 4-bit NF4 with
double quantization (the quantization constants are themselves quantized,
~0.4 bit/param saved) and computes in ``model.compute_dtype``. The LoRA
weights stay in full precision and train as usual; the adapter that
``save_pretrained`` writes is a plain peft adapter (the 4-bit base is not in
it), so the generator (hf or vllm) loads it unchanged on its own
full-precision base.

Guarantees: a bad value is refused before anything loads, naming the value;
a missing bitsandbytes says which extra to install. Not guaranteed: that the
outputs under NF4 equal those of the full-precision base (4-bit rounding
moves logits slightly; the adapter is trained against the 4-bit base and
served on the full one, the usual QLoRA trade-off).
"""

from __future__ import annotations

from pathlib import Path

QUANTIZATIONS = ("none", "nf4")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def check_quantization(quantization: str, compute_dtype: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"model.quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    return compute_dtype


def _bnb_config(compute_dtype: str):
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError('model.quantization = "nf4" needs bitsandbytes: pip install -e ".[gpu]" '
                          '(or pip install bitsandbytes)') from e
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype))


def load_base_causal_lm(path: str | Path, quantization: str = "none", compute_dtype: str = "float32",
                        device: str = "auto"):
    """-> AutoModelForCausalLM from the local folder ``path`` on ``device``
    (constellation/models/device.py: "auto" = the first CUDA device when
    there is one, else the CPU). "none": every weight in compute_dtype.
    "nf4": 4-bit linear layers, everything else in compute_dtype, on the same
    device (on the CPU bitsandbytes' CPU kernels: slow, but the same code
    path, which is what the CPU tests exercise)."""
    import torch
    from transformers import AutoModelForCausalLM

    from constellation.models.device import resolve_device

    check_quantization(quantization, compute_dtype)
    where = resolve_device(device)
    dtype = getattr(torch, compute_dtype)
    if quantization == "none":
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(where)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                quantization_config=_bnb_config(compute_dtype),
                                                device_map={"": str(where)})


def prepare_for_lora(model, quantization: str, gradient_checkpointing: bool = False):
    """A quantized base gets peft's k-bit preparation: frozen 4-bit weights,
    norms and embeddings upcast to float32 for stable training, input
    gradients enabled so LoRA gradients flow through the frozen layers.
    ``gradient_checkpointing`` (model.gradient_checkpointing) recomputes each
    layer in the backward pass: what lets a 4B base train next to vLLM on one
    24 GB card (README, memory plan)."""
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad for recomputation
    return model
