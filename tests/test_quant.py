"""model.quantization = "nf4": QLoRA (bitsandbytes 4-bit NF4 base + peft LoRA), run for real on CPU.

The tiny Llama is built (untrained) inside the test; the task is "<word>=>"
-> "upper(<word>)", which an untrained model's loss drops on quickly."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from constellation.protocol.config import ModelConfig, from_dict  # noqa: E402
from constellation.protocol.messages import CriticTrainRequest, LabeledItem, TrainExample  # noqa: E402
from constellation.models import base_model, lm, sft
from constellation.models import quant  # noqa: E402

try:
    import bitsandbytes  # noqa: F401

    HAVE_BNB = True
except ImportError:
    HAVE_BNB = False
needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason='bitsandbytes is not installed (pip install -e ".[gpu]")')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: no CUDA device on this machine")

WORDS = ["red", "blue", "fast", "data", "apple", "river", "green", "cloud", "stone", "light"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_base")
    tokenizer = base_model.build_tokenizer(["upper("])
    mcfg = ModelConfig(hidden_size=64, layers=2, heads=4, intermediate_size=128, max_len=64)
    base_model.build_tiny_model(mcfg, tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def examples(n: int) -> list[TrainExample]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        w = rng.choice(WORDS) + rng.choice(WORDS)
        out.append(TrainExample(problem_id=f"p{i}", prompt=f"{w}=>", completion=f"upper({w})"))
    return out


def test_bad_quantization_values_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="'int3'"):
        quant.check_quantization("int3", "float32")
    with pytest.raises(ValueError, match="'fp8'"):
        quant.check_quantization("nf4", "fp8")


@needs_bnb
def test_nf4_base_has_4bit_linears_and_trainable_full_precision_lora(tiny_base):
    import bitsandbytes as bnb

    model, _ = sft.load_lora_model(tiny_base, None, sft.LoraArgs(r=4, targets=("q_proj", "v_proj"), quantization="nf4"))
    attn = model.base_model.model.model.layers[0].self_attn
    assert isinstance(attn.q_proj.base_layer, bnb.nn.Linear4bit)
    assert attn.q_proj.base_layer.weight.quant_type == "nf4"
    assert attn.q_proj.base_layer.weight.quant_state.nested  # double quantization
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())


@needs_bnb
@pytest.mark.slow
def test_nf4_lora_training_lowers_the_loss_and_saves_a_plain_peft_adapter(tiny_base, tmp_path):
    out = tmp_path / "v1"
    lora = sft.LoraArgs(r=8, alpha=16, quantization="nf4", compute_dtype="float32")
    m = sft.train_sft(tiny_base, examples(64), out, sft.SFTArgs(lora=lora, lr=1e-2, epochs=12, max_seconds=0,
                                                             batch_size=16))
    assert m["steps"] == 48
    assert m["loss_last"] < m["loss_first"] - 0.5, m  # measured: 4.78 -> 3.95
    # the adapter loads unchanged on the full-precision base (what the generators do) and moves its outputs
    adapted, tokenizer = lm.load_model(tiny_base, str(out))
    plain, _ = lm.load_model(tiny_base)
    ids = torch.tensor([tokenizer.encode("redblue=>")])
    with torch.no_grad():
        assert not torch.allclose(adapted(input_ids=ids).logits, plain(input_ids=ids).logits)


@needs_bnb
@pytest.mark.slow
def test_dpo_on_an_nf4_base_raises_the_chosen_over_rejected_margin(tiny_base):
    from constellation.protocol.messages import PreferencePair
    from constellation.models.dpo import DPOArgs, train_dpo

    model, tokenizer = sft.load_lora_model(tiny_base, None, sft.LoraArgs(r=8, alpha=16, quantization="nf4"))
    pairs = [PreferencePair(problem_id=f"p{i}", prompt=f"{e.prompt}", chosen=e.completion,
                            rejected=e.completion.replace("upper", "lower"), source="verifier")
             for i, e in enumerate(examples(32))]
    m = train_dpo(model, tokenizer, pairs, DPOArgs(beta=0.1, lr=1e-2, epochs=4, batch_size=8, max_len=64))
    assert m["loss_last"] < m["loss_first"] and m["reward_margin"] > 0 and m["reward_accuracy"] > 0.9, m


@needs_bnb
@pytest.mark.slow
def test_policy_head_critic_trains_on_an_nf4_base(tiny_base, tmp_path):
    import bitsandbytes as bnb

    from roles.critic_policy_head import PolicyHeadCritic

    (tmp_path / "base_model.txt").write_text(str(tiny_base))
    cfg = from_dict({"model": {"quantization": "nf4"}, "critic": {"lora_r": 4, "steps": 30, "batch_size": 16,
                                                                  "lr": 1e-2, "max_len": 32, "holdout_frac": 0.3}})
    role = PolicyHeadCritic(cfg, tmp_path)
    role.setup()
    assert any(isinstance(mod, bnb.nn.Linear4bit) for mod in role.net.modules())
    rng = random.Random(0)
    labels = []
    for p in range(40):
        for k in range(4):
            good = rng.random() < 0.4
            labels.append(LabeledItem(candidate_id=f"train/1/p{p}/{k}", problem_id=f"p{p}",
                                      text=f"{rng.choice(WORDS)} {'good' if good else 'bad'}", label=good,
                                      visible_pass=good))
    m = role.handle(CriticTrainRequest(request_id="t1", round=1, labels=labels)).metrics
    assert m["loss_last"] < m["loss_first"], m


@needs_bnb
@needs_cuda
@pytest.mark.slow
def test_nf4_with_bfloat16_compute_on_the_gpu(tiny_base, tmp_path):
    lora = sft.LoraArgs(r=8, quantization="nf4", compute_dtype="bfloat16")
    m = sft.train_sft(tiny_base, examples(32), tmp_path / "v1", sft.SFTArgs(lora=lora, lr=1e-2, epochs=4, max_seconds=0,
                                                                          batch_size=16))
    assert m["loss_last"] < m["loss_first"], m
