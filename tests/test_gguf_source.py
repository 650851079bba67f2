"""GGUF as a model source: a tiny Llama written as a GGUF file in the test (the
``gguf`` package, llama.cpp's tensor names and q/k permutation) is converted once
into an HF folder whose logits match the original model's."""

from __future__ import annotations

import os

import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from constellation.models.gguf_source import MARKER, ensure_gguf_model, model_source, package_file  # noqa: E402

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: every byte is one token."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for _, c in sorted(zip(keep, codes))]


def permute(w, n_head: int):
    """llama.cpp's convert script stores q/k rows interleaved per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, tokens: list[str]) -> None:
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_theta if hasattr(c, "rope_theta") else 10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 2) + [3, 3])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(c.num_hidden_layers):
        hf = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[hf + "self_attn.q_proj.weight"], c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[hf + "self_attn.k_proj.weight"], c.num_key_value_heads))
        for ours, theirs in names.items():
            w.add_tensor(f"blk.{i}.{theirs}.weight", sd[hf + ours + ".weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokens = byte_tokens() + ["ab", "<|im_start|>", "<|im_end|>"]
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=FFN,
                         max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("gguf")
    write_gguf(folder / "tiny.gguf", model, tokens)
    return model, folder / "tiny.gguf"


def test_conversion_keeps_logits_tokenizer_and_template(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original, file = tiny
    out = ensure_gguf_model(file, str(tmp_path / "cache"))
    assert (out / MARKER).exists() and out.name.startswith("gguf-")
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        want, got = original(ids).logits, converted(ids).logits
    assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_second_call_reuses_the_cache_and_a_half_written_folder_is_not_used(tiny, tmp_path):
    _, file = tiny
    first = ensure_gguf_model(file, str(tmp_path))
    stamp = os.stat(first / "model.safetensors").st_mtime_ns
    assert ensure_gguf_model(file, str(tmp_path)) == first
    assert os.stat(first / "model.safetensors").st_mtime_ns == stamp  # not converted again
    (first / MARKER).unlink()  # as if a conversion died before its marker
    again = ensure_gguf_model(file, str(tmp_path))
    assert (again / MARKER).exists()


def test_model_source_forms(tiny, tmp_path):
    _, file = tiny
    assert model_source(str(file)) == file
    assert model_source(str(file.parent)) == file  # a folder holding one GGUF and no config.json
    assert model_source("tiny") is None
    (file.parent / "other.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="holds 2 GGUF files"):
        model_source(str(file.parent))
    (file.parent / "other.gguf").unlink()


def test_package_form_is_found_without_importing_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fakeweights"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('must never be imported')\n")
    (pkg / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_file("package:fakeweights/m.gguf") == pkg / "m.gguf"
    with pytest.raises(FileNotFoundError, match="no file 'x.gguf'"):
        package_file("package:fakeweights/x.gguf")
    with pytest.raises(FileNotFoundError, match="is not installed"):
        package_file("package:no_such_package_here/m.gguf")
    with pytest.raises(ValueError, match="expected package:PACKAGE/FILE"):
        package_file("package:fakeweights")
