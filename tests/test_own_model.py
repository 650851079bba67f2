"""Bring your own model: tiny random-init Qwen3 and Llama folders with chat
templates (tests/tiny_hf.py) through prompt rendering, the hf generator with
stop strings and an adapter swap, the STaR and DPO trainers, both critics,
and a hub id resolved from a real-layout HF cache. The trainer's prompt
equals the generator's token for token. (The vLLM generator on the same
folders: tests/test_generator_vllm.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_hf import build_tiny_hf, fake_hub_cache  # noqa: E402

from constellation.models import base_model, lm, sft  # noqa: E402
from constellation.models.prompting import prompt_ids, set_prompt_format, uses_chat  # noqa: E402
from constellation.protocol.config import Config, ModelConfig, TaskConfig, from_dict  # noqa: E402
from constellation.protocol.messages import (CriticTrainRequest, GenerateRequest, LabeledItem, LoadAdapter,  # noqa: E402
                                             PreferencePair, Problem, Sampling, ScoreItem, ScoreRequest,
                                             TrainExample, TrainRequest)

KINDS = ("qwen3", "llama")
PROMPTS = ["Q: 12+7?\n", "Q: 3*4?\n"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("own_models")
    return {kind: build_tiny_hf(kind, root / kind, seed=1) for kind in KINDS}


def cfg_for(**sections) -> Config:
    base = {"trainer": {"lora_r": 4, "lora_alpha": 8, "epochs": 2, "max_seconds": 0, "batch_size": 4, "lr": 1e-2},
            "generator": {"batch_size": 16, "device": "cpu"}, "task": {"stop": ["\n\n"]},
            "critic": {"steps": 4, "batch_size": 4, "max_len": 64, "holdout_frac": 0.0, "lora_r": 4}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return from_dict(base)


def run_dir_for(tmp_path: Path, folder: Path) -> Path:
    (tmp_path / "base_model.txt").write_text(str(folder))
    return tmp_path


def problems() -> list[Problem]:
    return [Problem(id=f"p{i}", task="math", prompt=p, data={}, reference="19") for i, p in enumerate(PROMPTS)]


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_rendering_auto_none_and_file(folders, kind, tmp_path):
    tok = lm.load_tokenizer(folders[kind])
    assert uses_chat(tok)
    ids = prompt_ids(tok, PROMPTS[0])
    text = tok.decode(ids)
    assert text.index("user") < text.index("Q: 12+7?") < text.rindex("assistant")
    raw = prompt_ids(lm.load_tokenizer(folders[kind], "none"), PROMPTS[0])
    assert tok.decode(raw, skip_special_tokens=True) == PROMPTS[0] and len(raw) < len(ids)
    template = tmp_path / "t.jinja"
    template.write_text("[{{ messages[0]['content'] }}]=")
    own = prompt_ids(set_prompt_format(lm.load_tokenizer(folders[kind]), str(template)), "x")
    assert tok.decode(own) == "[x]="
    with pytest.raises(FileNotFoundError, match="chat_template"):
        set_prompt_format(tok, str(tmp_path / "missing.jinja"))


def record_generator_prompts(monkeypatch) -> list[list[int]]:
    """Every prompt id list the hf sampler decodes from (fast loop or generate)."""
    seen: list[list[int]] = []
    for name in ("_sample_fast", "_sample_generate"):
        real = getattr(lm, name)

        def spy(first, chunk_ids, *a, _real=real, **kw):
            seen.extend(list(ids) for ids in chunk_ids)
            return _real(first, chunk_ids, *a, **kw)
        monkeypatch.setattr(lm, name, spy)
    return seen


def record_trainer_batches(monkeypatch) -> list[tuple[list[int], int]]:
    seen: list[tuple[list[int], int]] = []
    real = lm.collate

    def spy(batch, pad_id):
        seen.extend(batch)
        return real(batch, pad_id)
    monkeypatch.setattr(sft, "collate", spy)
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_hf_generator_and_star_trainer_see_the_same_prompt_tokens(folders, kind, tmp_path, monkeypatch):
    from roles.generator_hf import HfGenerator
    from roles.trainer_star import StarTrainer

    run_dir = run_dir_for(tmp_path, folders[kind])
    cfg = cfg_for()
    gen_prompts, train_rows = record_generator_prompts(monkeypatch), record_trainer_batches(monkeypatch)
    gen = HfGenerator(cfg, run_dir)
    info = gen.setup()
    assert info["chat"] and info["device"] == "cpu"
    req = GenerateRequest(request_id="g", problems=problems(), k=3, sampling=Sampling(max_new_tokens=12, seed=1),
                          adapter_version=0, candidate_prefix="eval/0")
    cands = gen.handle(req).items
    assert len(cands) == 6 and all("\n\n" not in c.text for c in cands)
    trainer = StarTrainer(cfg, run_dir)
    trainer.setup()
    examples = [TrainExample(problem_id=c.problem_id, prompt=PROMPTS[int(c.problem_id[1])], completion=c.text or "19")
                for c in cands]
    ready = trainer.handle(TrainRequest(request_id="t", round=1, examples=examples))
    assert ready.version == 1
    assert sorted(map(tuple, gen_prompts)) == sorted({tuple(p) for p in gen_prompts})  # one chunk, no repeats
    trained_prompts = {tuple(ids[:n]) for ids, n in train_rows}
    assert trained_prompts == {tuple(p) for p in gen_prompts}  # token for token
    _, _, labels = lm.collate(train_rows[:2], 0)
    assert all((labels[r, :n] == -100).all() for r, (_, n) in enumerate(train_rows[:2]))  # prompt masked
    loaded = gen.handle(LoadAdapter(request_id="l", version=1, path=ready.path))
    assert loaded.version == 1 and {c.adapter_version for c in gen.handle(req).items} == {1}


@pytest.mark.parametrize("kind", KINDS)
def test_dpo_trainer_trains_on_the_chat_rendered_pairs(folders, kind, tmp_path, monkeypatch):
    from constellation.models import dpo
    from roles.trainer_dpo import DpoTrainer

    seen: list = []
    real = dpo.encode_pair
    monkeypatch.setattr(dpo, "encode_pair", lambda tok, prompt, *a: seen.append(prompt_ids(tok, prompt)) or real(
        tok, prompt, *a))
    trainer = DpoTrainer(cfg_for(pairs={"holdout_frac": 0.0}), run_dir_for(tmp_path, folders[kind]))
    trainer.setup()
    pairs = [PreferencePair(problem_id=f"p{i}", prompt=p, chosen="19", rejected="20", source="verifier")
             for i, p in enumerate(PROMPTS * 2)]
    ready = trainer.handle(TrainRequest(request_id="d", round=1, examples=[], pairs=pairs))
    assert ready.version == 1 and ready.metrics["steps"] >= 1
    tok = lm.load_tokenizer(folders[kind])
    assert seen and all(ids == prompt_ids(tok, PROMPTS[i % 2]) for i, ids in enumerate(seen[:4]))


@pytest.mark.parametrize("critic", ["roles.critic_small:SmallCritic", "roles.critic_policy_head:PolicyHeadCritic"])
@pytest.mark.parametrize("kind", KINDS)
def test_both_critics_train_and_score_on_the_own_model_run(folders, kind, critic, tmp_path):
    from constellation.runtime.registry import resolve_role

    cls = resolve_role("critic", critic)
    role = cls(cfg_for(critic={"device": "auto"}), run_dir_for(tmp_path, folders[kind]))
    assert role.setup()["device"] == "cpu"
    labels = [LabeledItem(candidate_id=f"c{i}", problem_id=f"p{i % 5}", text=f"Q: {i}?\n{i}", label=i % 2 == 0)
              for i in range(20)]
    trained = role.handle(CriticTrainRequest(request_id="c", round=1, labels=labels))
    assert trained.version == 1
    scores = role.handle(ScoreRequest(request_id="s", items=[ScoreItem(candidate_id="x", problem_id="p", text="Q: 1?")]))
    assert len(scores.scores) == 1 and 0.0 <= scores.scores[0] <= 1.0


def test_a_hub_id_resolves_from_a_real_layout_hf_cache(folders, tmp_path, monkeypatch):
    snapshot = fake_hub_cache(tmp_path / "hf", "tinyorg/tiny-qwen3", folders["qwen3"])
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    path = base_model.ensure_base_model(ModelConfig(base="tinyorg/tiny-qwen3"), TaskConfig(), 0, [])
    assert path == snapshot
    model, tok = lm.load_model(path)
    assert type(model).__name__ == "Qwen3ForCausalLM" and uses_chat(tok)
    with pytest.raises(FileNotFoundError, match="not in the local HF cache"):
        base_model.ensure_base_model(ModelConfig(base="tinyorg/absent"), TaskConfig(), 0, [])


def test_devices_resolve_and_refuse_cuda_without_it():
    from constellation.models.device import autocast, resolve_device

    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert str(resolve_device("auto")) == want and str(resolve_device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="expected one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:1")
    with autocast("cpu", "bfloat16"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_stop_strings_cut_text_and_logprob_at_the_completing_token(folders):
    from constellation.models.prompting import cut_at_stop

    tok = lm.load_tokenizer(folders["llama"])
    ids = tok.encode("ab\n\ncd", add_special_tokens=False)
    lps = [-1.0] * len(ids)
    assert cut_at_stop(tok, ids, lps, ["\n\n"]) == ("ab", -4.0)  # a, b, \n, \n
    assert cut_at_stop(tok, ids, lps, ["zz"]) == ("ab\n\ncd", -6.0)
    assert cut_at_stop(tok, ids, lps + [-0.5], []) == ("ab\n\ncd", -6.5)  # a sampled eos counts


def test_sixteen_bit_compute_dtype_trains_under_autocast(folders, tmp_path):
    args = sft.SFTArgs(lora=sft.LoraArgs(r=4, alpha=8, compute_dtype="bfloat16", device="cpu"), epochs=1,
                      max_seconds=0, batch_size=4, lr=1e-3)
    ex = [TrainExample(problem_id="p", prompt=p, completion="19") for p in PROMPTS * 2]
    metrics = sft.train_sft(folders["llama"], ex, tmp_path / "v1", args)
    assert metrics["steps"] == 1 and (tmp_path / "v1" / "adapter_config.json").exists()
    model, _ = lm.load_model(folders["llama"], str(tmp_path / "v1"), dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_config_device_and_chat_template_reach_the_lora_args():
    cfg = msgspec.structs.replace(cfg_for(trainer={"device": "cpu"}, model={"chat_template": "none"}))
    args = sft.LoraArgs.from_config(cfg)
    assert (args.device, args.chat_template) == ("cpu", "none")
