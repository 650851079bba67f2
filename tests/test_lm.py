"""constellation/models/lm.py and constellation/models/base_model.py on a toy task: prompt "<word>=>", completion "upper(<word>)".

Every model here is tiny (hidden 64, 2 layers) and built inside the tests."""

from __future__ import annotations

import json
import math
import random

import msgspec
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from constellation.protocol.config import ModelConfig, TaskConfig  # noqa: E402
from constellation.protocol.messages import Problem, TrainExample  # noqa: E402
from constellation.models import base_model
from constellation.models import lm, sft  # noqa: E402

TOKENS = ["upper(", "lower(", "cat("]
WORDS = ["red", "blue", "fast", "data", "apple", "river", "green", "cloud", "stone", "light", "north", "paper"]


def toy_problems(n: int, seed: int = 0, prefix: str = "L") -> list[Problem]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = rng.choice(WORDS) + rng.choice(WORDS)
        out.append(Problem(id=f"{prefix}{i}", task="toy", prompt=f"{w}=>", data={}, reference=f"upper({w})"))
    return out


def tiny_mcfg(cache_dir, **kw) -> ModelConfig:
    base = dict(cache_dir=str(cache_dir), hidden_size=64, layers=2, heads=4, intermediate_size=128,
                max_len=64, warm_start_seconds=4.0, warm_start_steps=250, warm_start_lr=3e-3, warm_start_batch=16)
    return ModelConfig(**{**base, **kw})


TCFG = TaskConfig(impl="toy")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return base_model.ensure_base_model(tiny_mcfg(cache), TCFG, 0, toy_problems(300), dsl_tokens=TOKENS)


@pytest.fixture(scope="module")
def loaded(base_dir):
    return lm.load_model(base_dir)


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    ids, n_prompt = lm.encode_example(tokenizer, prompt, completion)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logp[i - 1, ids[i]].item() for i in range(n_prompt, len(ids)))


# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------


def test_tokenizer_round_trips_text_and_keeps_dsl_tokens_whole():
    tok = lm.build_tokenizer(TOKENS)
    for s in ['cat(upper(x),". ",lower(x))', "a -> B\nc d -> E\n=>", "tab\there ~!@#$%^&*{}[]|\\'\"",
              "héllo “quoted” — …", "", "upperupper("]:
        ids = tok.encode(s, add_special_tokens=False)
        assert tok.decode(ids) == s, (s, ids)
    pieces = tok.convert_ids_to_tokens(tok.encode("cat(upper(x)", add_special_tokens=False))
    assert pieces == ["cat(", "upper(", "x", ")"], pieces


def test_tokenizer_specials_and_unknown_chars():
    tok = lm.build_tokenizer(TOKENS)
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.encode("漢", add_special_tokens=False) == [tok.unk_token_id]


# --------------------------------------------------------------------------
# tiny model, warm start, cache
# --------------------------------------------------------------------------


def test_warm_start_loss_goes_down(base_dir):
    report = json.loads((base_dir / "warm_start.json").read_text())
    assert report["steps"] > 20, report["steps"]
    assert report["loss_last"] < 0.5 * report["loss_first"], (report["loss_first"], report["loss_last"])
    assert 10_000 < report["n_params"] < 200_000, report["n_params"]


def test_warm_start_with_prompt_loss_reports_completion_loss():
    tok = lm.build_tokenizer(TOKENS)
    model = base_model.build_tiny_model(tiny_mcfg("unused"), tok, seed=0)
    # a step budget, not seconds: a loaded machine must not change what is trained (it once left 5 steps)
    args = base_model.WarmStartArgs(steps=40, lr=3e-3, batch_size=8, max_len=64, seed=0, prompt_loss_weight=0.5)
    report = base_model.warm_start(model, tok, toy_problems(64), args)
    assert report["steps"] > 5 and report["prompt_loss_weight"] == 0.5
    assert math.isfinite(report["loss_last"]) and report["loss_last"] < report["loss_first"]
    assert not model.training


def test_length_bucketed_batches_cover_every_index_once():
    lengths = [random.Random(i).randint(5, 90) for i in range(101)]
    batches = base_model.length_bucketed_batches(lengths, 8, random.Random(0), window=4)
    assert sorted(i for b in batches for i in b) == list(range(101))
    assert all(1 <= len(b) <= 8 for b in batches)


def test_base_model_cache_is_reused(base_dir, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("warm start ran again although the cached model is complete")

    monkeypatch.setattr(base_model, "warm_start", no_training)
    again = base_model.ensure_base_model(tiny_mcfg(base_dir.parent), TCFG, 0, toy_problems(300), dsl_tokens=TOKENS)
    assert again == base_dir


def test_cache_key_covers_seed_task_and_model(tmp_path):
    labeled = toy_problems(10)
    key = base_model.base_model_key(tiny_mcfg(tmp_path), TCFG, 0, labeled, TOKENS)
    assert key == base_model.base_model_key(tiny_mcfg(tmp_path / "elsewhere", threads=2), TCFG, 0, labeled, TOKENS)
    assert key != base_model.base_model_key(tiny_mcfg(tmp_path), TCFG, 1, labeled, TOKENS)
    assert key != base_model.base_model_key(tiny_mcfg(tmp_path, layers=3), TCFG, 0, labeled, TOKENS)
    assert key != base_model.base_model_key(tiny_mcfg(tmp_path), msgspec.structs.replace(TCFG, n_visible=4), 0,
                                            labeled, TOKENS)
    assert key != base_model.base_model_key(tiny_mcfg(tmp_path), TCFG, 0, toy_problems(10, seed=1), TOKENS)
    # a step budget makes the time budget irrelevant, so it leaves the key alone
    assert key == base_model.base_model_key(tiny_mcfg(tmp_path, warm_start_seconds=99.0), TCFG, 0, labeled, TOKENS)
    assert key != base_model.base_model_key(tiny_mcfg(tmp_path, warm_start_steps=251), TCFG, 0, labeled, TOKENS)
    # how the trainer later loads the base (4-bit, dtype) does not change the base itself
    assert key == base_model.base_model_key(tiny_mcfg(tmp_path, quantization="nf4", compute_dtype="bfloat16",
                                                      gradient_checkpointing=True), TCFG, 0, labeled, TOKENS)


def test_folder_without_marker_is_rebuilt(tmp_path):
    mcfg, labeled = tiny_mcfg(tmp_path, warm_start_seconds=0.5, warm_start_steps=20), toy_problems(20)
    final = tmp_path / f"tiny-{base_model.base_model_key(mcfg, TCFG, 0, labeled, TOKENS)}"
    final.mkdir()
    (final / "config.json").write_text("{half written")
    path = base_model.ensure_base_model(mcfg, TCFG, 0, labeled, dsl_tokens=TOKENS)
    assert path == final and (final / base_model.MARKER).exists()
    lm.load_model(path)  # the half-written config was replaced
    assert not list(tmp_path.glob("*.tmp-*"))


def test_local_base_folder_is_used_as_is(loaded, tmp_path):
    model, tokenizer = loaded
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    mcfg = ModelConfig(base=str(tmp_path / "m"), cache_dir=str(tmp_path / "cache"))
    assert base_model.ensure_base_model(mcfg, TCFG, 0, []) == tmp_path / "m"
    assert not (tmp_path / "cache").exists()
    lm.load_model(tmp_path / "m")


def test_local_base_folder_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="neither"):
        base_model.ensure_base_model(ModelConfig(base=str(tmp_path / "no" / "such" / "folder")), TCFG, 0, [])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # a hub id missing from the local cache: named, not fetched
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(FileNotFoundError, match="not in the local HF cache"):
        base_model.ensure_base_model(ModelConfig(base="org/some-hub-model"), TCFG, 0, [])
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(FileNotFoundError, match="weights"):
        base_model.ensure_base_model(ModelConfig(base=str(tmp_path)), TCFG, 0, [])


# --------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------


def test_fast_decoder_matches_hf_forward(loaded):
    model, tokenizer = loaded
    fast = lm._FastLlama(model)
    prompts = [lm.encode_example(tokenizer, p, None)[0] for p in ("redblue=>", "a=>")]
    P, L, k, steps = 2, max(map(len, prompts)), 3, 4
    ids = torch.zeros((P, L), dtype=torch.long)
    valid = torch.zeros((P, L), dtype=torch.bool)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):], valid[r, L - len(p):] = torch.tensor(p), True
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    mask = (torch.ones(L, L, dtype=torch.bool).tril()[None] & valid[:, None]) | torch.eye(L, dtype=torch.bool)[None]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits, prompt_cache = fast.prefill(ids, positions, mask[:, None])
        for r, p in enumerate(prompts):  # prefill: last position vs HF on the unpadded prompt
            ref = model(input_ids=torch.tensor([p])).logits[0, -1]
            assert torch.allclose(logits[r, -1], ref, atol=1e-4)
        bias = torch.zeros(P, 1, 1, L).masked_fill(~valid[:, None, None], float("-inf"))
        gen_cache = fast.new_cache(P * k, steps)
        seqs = [list(prompts[r // k]) for r in range(P * k)]
        pos = positions[:, -1].repeat_interleave(k)
        for step in range(steps):
            tok = torch.randint(4, len(tokenizer), (P * k,), generator=g)
            pos = pos + 1
            out = fast.decode(tok, pos, prompt_cache, bias, gen_cache, step)
            for r in range(P * k):
                seqs[r].append(int(tok[r]))
                ref = model(input_ids=torch.tensor([seqs[r]])).logits[0, -1]
                assert torch.allclose(out[r], ref, atol=1e-4), (step, r, (out[r] - ref).abs().max())


def test_sample_shapes_determinism_and_logprobs(loaded):
    model, tokenizer = loaded
    prompts = ["redblue=>", "stonepaper=>", "x=>"]
    a = lm.sample(model, tokenizer, prompts, k=5, max_new_tokens=16, seed=3, batch_size=8)
    assert [len(s) for s in a] == [5, 5, 5]
    assert all(isinstance(t, str) and lp <= 0 for s in a for t, lp in s)
    assert a == lm.sample(model, tokenizer, prompts, k=5, max_new_tokens=16, seed=3, batch_size=8)
    assert a != lm.sample(model, tokenizer, prompts, k=5, max_new_tokens=16, seed=4, batch_size=8)
    # completions only: no special tokens, no echo of the prompt (the model is random,
    # so any other character may appear)
    specials = ("<eos>", "<bos>", "<pad>")
    assert all(not any(sp in t for sp in specials) and not t.startswith(p)
               for p, s in zip(prompts, a) for t, _ in s)


def test_sample_logprob_is_the_raw_model_logprob(loaded):
    model, tokenizer = loaded
    (samples,) = lm.sample(model, tokenizer, ["greenlight=>"], k=4, temperature=1.5, max_new_tokens=20, seed=0)
    for text, logprob in samples:
        ids, n_prompt = lm.encode_example(tokenizer, "greenlight=>", text)
        ids_len = len(ids) if len(ids) - n_prompt <= 20 else n_prompt + 20  # eos only if it fit
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids[:ids_len]])).logits[0].log_softmax(-1)
        expected = sum(logp[i - 1, ids[i]].item() for i in range(n_prompt, ids_len))
        assert math.isclose(logprob, expected, abs_tol=1e-3), (text, logprob, expected)


def test_greedy_fast_and_generate_agree(loaded):
    model, tokenizer = loaded
    prompts = ["redblue=>", "cloudnorth=>", "datariver=>"]
    fast = lm.sample(model, tokenizer, prompts, k=1, temperature=0, max_new_tokens=20, method="fast")
    gen = lm.sample(model, tokenizer, prompts, k=1, temperature=0, max_new_tokens=20, method="generate")
    assert [s[0][0] for s in fast] == [s[0][0] for s in gen]
    for f, g in zip(fast, gen):
        assert math.isclose(f[0][1], g[0][1], abs_tol=1e-3)


def test_warm_started_model_solves_the_toy_task(loaded):
    model, tokenizer = loaded
    (samples,) = lm.sample(model, tokenizer, ["redstone=>"], k=8, temperature=0.5, max_new_tokens=20, seed=0)
    assert sum(t == "upper(redstone)" for t, _ in samples) >= 4, samples


# --------------------------------------------------------------------------
# LoRA SFT
# --------------------------------------------------------------------------


def lower_examples(n: int) -> list[TrainExample]:
    """A behaviour the base never saw: lower( instead of upper(."""
    return [TrainExample(problem_id=p.id, prompt=p.prompt, completion=p.reference.replace("upper(", "lower("))
            for p in toy_problems(n, seed=7, prefix="T")]


def test_train_sft_writes_a_loadable_adapter_that_changes_outputs(base_dir, loaded, tmp_path):
    examples = lower_examples(48)
    metrics = sft.train_sft(base_dir, examples, tmp_path / "v1", sft.SFTArgs(lr=1e-2, epochs=4, max_seconds=0,
                           batch_size=8, lora=sft.LoraArgs(r=4, alpha=8)))
    assert (tmp_path / "v1" / "adapter_config.json").exists()
    assert metrics["steps"] == 24 and metrics["n_examples"] == 48
    assert metrics["loss_last"] < metrics["loss_first"]
    tuned, tokenizer = lm.load_model(base_dir, str(tmp_path / "v1"))
    base, _ = loaded
    before = completion_logprob(base, tokenizer, "bluegreen=>", "lower(bluegreen)")
    after = completion_logprob(tuned, tokenizer, "bluegreen=>", "lower(bluegreen)")
    assert after > before + 1.0, (before, after)


def test_train_sft_continues_from_an_adapter(base_dir, tmp_path):
    examples = lower_examples(16)
    first = sft.train_sft(base_dir, examples, tmp_path / "v1",
                         sft.SFTArgs(lr=1e-2, epochs=2, batch_size=8, lora=sft.LoraArgs(r=4)))
    second = sft.train_sft(base_dir, examples, tmp_path / "v2",
                          sft.SFTArgs(init_adapter=str(tmp_path / "v1"), lr=1e-2, epochs=2, batch_size=8))
    assert second["loss_first"] < first["loss_first"]
    lm.load_model(base_dir, str(tmp_path / "v2"))


def test_train_sft_stops_at_max_seconds(base_dir, tmp_path):
    metrics = sft.train_sft(base_dir, lower_examples(64), tmp_path / "v1",
                           sft.SFTArgs(epochs=1000, max_seconds=1.0, batch_size=8))
    # stopped by the clock, long before 1000 epochs (8,000 steps); loose bound: loading counts and CI is loaded
    assert metrics["seconds"] < 120 and metrics["steps"] < 1000 * 8


def test_full_fine_tuning_with_a_step_budget_saves_full_weights_that_load(base_dir, loaded, tmp_path):
    # trainer.lora = false: every weight trains for exactly max_steps steps (more than one pass over
    # the 16 examples), the folder holds full weights (no adapter), and load_model serves them
    examples = lower_examples(16)
    metrics = sft.train_sft(base_dir, examples, tmp_path / "v1",
                           sft.SFTArgs(full=True, lr=3e-3, max_steps=12, max_seconds=0, batch_size=8))
    assert metrics["steps"] == 12
    assert lm.is_full_weights(tmp_path / "v1") and lm.holds_trained_weights(tmp_path / "v1")
    assert not (tmp_path / "v1" / "adapter_config.json").exists()
    tuned, tokenizer = lm.load_model(base_dir, str(tmp_path / "v1"))
    base, _ = loaded
    before = completion_logprob(base, tokenizer, "bluegreen=>", "lower(bluegreen)")
    after = completion_logprob(tuned, tokenizer, "bluegreen=>", "lower(bluegreen)")
    assert after > before + 1.0, (before, after)
    # "continue": the next round starts from these full weights, not from the base
    again = sft.train_sft(base_dir, examples, tmp_path / "v2", sft.SFTArgs(full=True, init_adapter=str(tmp_path / "v1"),
                                                                          lr=3e-3, max_steps=2, batch_size=8))
    assert again["loss_first"] < metrics["loss_first"]


def test_a_step_budget_ignores_epochs_and_lr_zero_changes_nothing(base_dir, loaded, tmp_path):
    sft.train_sft(base_dir, lower_examples(8), tmp_path / "v1",
                 sft.SFTArgs(full=True, lr=0.0, epochs=1, max_steps=5, batch_size=8))
    tuned, tokenizer = lm.load_model(base_dir, str(tmp_path / "v1"))
    base, _ = loaded
    for a, b in zip(base.parameters(), tuned.parameters()):
        assert torch.equal(a, b)
    assert json.loads((tmp_path / "v1" / "metrics.json").read_text())["steps"] == 5


def test_full_fine_tuning_refuses_a_4bit_base(base_dir, tmp_path):
    with pytest.raises(ValueError, match="full fine-tuning"):
        sft.train_sft(base_dir, lower_examples(8), tmp_path / "v1",
                     sft.SFTArgs(full=True, max_steps=1, lora=sft.LoraArgs(quantization="nf4")))


def test_train_sft_nan_loss_raises_and_writes_nothing(base_dir, tmp_path):
    with pytest.raises(FloatingPointError, match="loss"):
        sft.train_sft(base_dir, lower_examples(32), tmp_path / "v1", sft.SFTArgs(lr=float("inf"), epochs=2, batch_size=8))
    assert not (tmp_path / "v1").exists() and not list(tmp_path.iterdir())


def test_warm_start_with_a_step_budget_is_reproducible():
    import torch

    from constellation.protocol.config import ModelConfig

    tok = base_model.build_tokenizer(["upper("])
    reports, weights = [], []
    for _ in range(2):
        model = base_model.build_tiny_model(ModelConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64,
                                                        max_len=64), tok, seed=0)
        args = base_model.WarmStartArgs(seconds=0.0, steps=12, lr=3e-3, batch_size=8, max_len=64, seed=0)
        reports.append(base_model.warm_start(model, tok, toy_problems(32), args))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert reports[0]["steps"] == reports[1]["steps"] == 12
    assert torch.equal(weights[0], weights[1])
    assert reports[0]["loss_last"] == reports[1]["loss_last"]
