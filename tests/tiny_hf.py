"""Tiny random-init causal LMs saved as real Hugging Face folders with a chat
template, for the bring-your-own-model tests (tests/test_own_model.py, the
vLLM child, scripts/gpu_acceptance.sh's --build). Built in the test, never downloaded.

    build_tiny_hf(kind, folder, seed) -> folder     kind: "qwen3" (ChatML) or "llama" (Llama-3 headers)

Both use the project's character tokenizer plus the template's special tokens;
head_dim 32 (vLLM's CPU attention serves 32..512). The eos is the
template's end-of-turn token, as in the instruct models they imitate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
SPECIALS = {"qwen3": (["<|im_start|>", "<|im_end|>"], "<|im_end|>", None, CHATML),
            "llama": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>",
                      "<|begin_of_text|>", LLAMA3)}


def build_tiny_hf(kind: str, folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from constellation.models.base_model import build_tokenizer

    extra, eos, bos, template = SPECIALS[kind]
    tokenizer = build_tokenizer([])
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.eos_token = eos
    tokenizer.bos_token = bos
    tokenizer.chat_template = template
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
                 tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**shape))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fake_hub_cache(hf_home: Path, repo_id: str, model_dir: Path, revision: str = "0" * 40) -> Path:
    """Lay ``model_dir`` out as the HF hub cache does: blobs named by content,
    snapshots/<revision>/ symlinks to them, refs/main naming the revision."""
    import hashlib

    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in model_dir.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(Path("../..") / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


if __name__ == "__main__":  # python tests/tiny_hf.py KIND FOLDER
    print(json.dumps(str(build_tiny_hf(sys.argv[1], Path(sys.argv[2])))))
