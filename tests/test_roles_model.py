"""The generator and trainer roles through setup()/handle(), no sockets, on a tiny toy model."""

from __future__ import annotations

import gc
import random

import msgspec
import pytest

torch = pytest.importorskip("torch")

from constellation.protocol.config import Config  # noqa: E402
from constellation.protocol.messages import (AdapterLoaded, AdapterReady, Candidates, GenerateRequest, LoadAdapter,  # noqa: E402
                                    Sampling, TrainRequest)
from constellation.models import base_model  # noqa: E402
from roles.generator_hf import HfGenerator  # noqa: E402
from roles.trainer_star import StarTrainer  # noqa: E402
from constellation.protocol.config import ModelConfig, TaskConfig  # noqa: E402
from constellation.protocol.messages import Problem, TrainExample  # noqa: E402

# the same toy task as tests/test_lm.py: "<word>=>" -> "upper(<word>)"
TOKENS = ["upper(", "lower(", "cat("]
WORDS = ["red", "blue", "fast", "data", "apple", "river", "green", "cloud", "stone", "light", "north", "paper"]
TCFG = TaskConfig(impl="toy")


def toy_problems(n: int, seed: int = 0, prefix: str = "L") -> list[Problem]:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) + rng.choice(WORDS) for _ in range(n)]
    return [Problem(id=f"{prefix}{i}", task="toy", prompt=f"{w}=>", data={}, reference=f"upper({w})")
            for i, w in enumerate(words)]


def lower_examples(n: int) -> list[TrainExample]:
    return [TrainExample(problem_id=p.id, prompt=p.prompt, completion=p.reference.replace("upper(", "lower("))
            for p in toy_problems(n, seed=7, prefix="T")]


def tiny_mcfg(cache_dir, **kw) -> ModelConfig:
    base = dict(cache_dir=str(cache_dir), hidden_size=64, layers=2, heads=4, intermediate_size=128,
                max_len=64, warm_start_seconds=3.0, warm_start_steps=200, warm_start_lr=3e-3, warm_start_batch=16)
    return ModelConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return base_model.ensure_base_model(tiny_mcfg(cache, warm_start_seconds=3.0), TCFG, 0, toy_problems(300),
                                        dsl_tokens=TOKENS)


def make_cfg(**trainer) -> Config:
    cfg = Config()
    t = dict(lr=1e-2, epochs=3, max_seconds=20.0, batch_size=8, lora_r=4, lora_alpha=8)
    return msgspec.structs.replace(cfg, trainer=msgspec.structs.replace(cfg.trainer, **{**t, **trainer}),
                                   generator=msgspec.structs.replace(cfg.generator, batch_size=16))


@pytest.fixture
def run_dir(tmp_path, base_dir):
    (tmp_path / "base_model.txt").write_text(str(base_dir))
    return tmp_path


def gen_request(rid: str = "r1", prefix: str = "eval/0", k: int = 3, seed: int = 0,
                temperature: float = 1.0) -> GenerateRequest:
    return GenerateRequest(request_id=rid, problems=toy_problems(2, seed=5, prefix="E"), k=k,
                           sampling=Sampling(temperature=temperature, max_new_tokens=20, seed=seed),
                           adapter_version=0, candidate_prefix=prefix)


def started(role_cls, cfg, run_dir):
    role = role_cls(cfg, run_dir)
    role.setup()
    return role


def test_generator_candidates_ids_versions_and_reproducibility(run_dir):
    gen = started(HfGenerator, make_cfg(), run_dir)
    out = gen.handle(gen_request(temperature=3.0))  # hot, so that other seeds give other texts
    assert isinstance(out, Candidates) and out.request_id == "r1"
    assert [c.id for c in out.items] == [f"eval/0/E{p}/{i}" for p in (0, 1) for i in range(3)]
    assert all(c.adapter_version == 0 and c.logprob <= 0 for c in out.items)
    again = gen.handle(gen_request(temperature=3.0))
    assert [c.text for c in again.items] == [c.text for c in out.items]
    other = gen.handle(gen_request(prefix="eval/1", temperature=3.0))
    assert [c.text for c in other.items] != [c.text for c in out.items]
    assert gen.stats()["done"] == 18 and gen.stats()["per_second"] > 0


def test_generator_needs_the_prepared_base_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="base_model.txt"):
        HfGenerator(make_cfg(), tmp_path).setup()


def test_trainer_adapter_is_served_and_tags_candidates(run_dir):
    trainer = started(StarTrainer, make_cfg(), run_dir)
    gen = started(HfGenerator, make_cfg(), run_dir)
    ready = trainer.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(32)))
    assert isinstance(ready, AdapterReady) and ready.version == 1
    assert ready.path == str(run_dir / "adapters" / "v1") and ready.metrics["steps"] > 0
    base_items = gen.handle(gen_request(k=4)).items
    loaded = gen.handle(LoadAdapter(request_id="l1", version=1, path=ready.path))
    assert isinstance(loaded, AdapterLoaded) and loaded.version == 1
    items = gen.handle(gen_request(k=4)).items
    assert all(c.adapter_version == 1 for c in items)
    assert [(c.text, c.logprob) for c in items] != [(c.text, c.logprob) for c in base_items]
    back = gen.handle(LoadAdapter(request_id="l2", version=0, path=""))
    assert back.version == 0
    again = gen.handle(gen_request(k=4)).items
    assert [(c.text, c.logprob, c.adapter_version) for c in again] == [
        (c.text, c.logprob, c.adapter_version) for c in base_items]


def test_generator_adapter_swaps_do_not_accumulate_models(run_dir):
    from transformers import LlamaForCausalLM

    trainer = started(StarTrainer, make_cfg(epochs=1), run_dir)
    path = trainer.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(8))).path
    gen = started(HfGenerator, make_cfg(), run_dir)

    def live_models() -> int:
        gc.collect()
        return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())

    gen.handle(LoadAdapter(request_id="a", version=1, path=path))
    count = live_models()
    for i in range(4):
        gen.handle(LoadAdapter(request_id=f"b{i}", version=0, path=""))
        gen.handle(LoadAdapter(request_id=f"c{i}", version=1, path=path))
    assert live_models() <= count


def test_generator_rejects_a_missing_adapter_and_keeps_serving(run_dir, tmp_path):
    gen = started(HfGenerator, make_cfg(), run_dir)
    with pytest.raises(FileNotFoundError, match="still serving v0"):
        gen.handle(LoadAdapter(request_id="l1", version=3, path=str(tmp_path / "nope")))
    assert all(c.adapter_version == 0 for c in gen.handle(gen_request()).items)


def test_trainer_empty_round_returns_the_previous_adapter(run_dir):
    trainer = started(StarTrainer, make_cfg(epochs=1), run_dir)
    skipped = trainer.handle(TrainRequest(request_id="t1", round=1, examples=[]))
    assert (skipped.version, skipped.path, skipped.metrics) == (0, "", {"skipped": 1.0, "n_examples": 0.0})
    trainer.handle(TrainRequest(request_id="t2", round=2, examples=lower_examples(8)))
    skipped = trainer.handle(TrainRequest(request_id="t3", round=3, examples=[]))
    assert (skipped.version, skipped.path) == (2, str(run_dir / "adapters" / "v2"))


def test_trainer_resent_request_does_not_train_twice(run_dir):
    trainer = started(StarTrainer, make_cfg(epochs=1), run_dir)
    first = trainer.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(8)))
    restarted = started(StarTrainer, make_cfg(epochs=1), run_dir)  # e.g. after a crash
    again = restarted.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(8)))
    assert (again.version, again.path) == (first.version, first.path) and again.metrics["cached"] == 1
    assert restarted.stats()["trained_rounds"] == 0 and restarted.last_version == 1


def test_trainer_continue_mode_starts_from_the_last_adapter(run_dir):
    trainer = started(StarTrainer, make_cfg(mode="continue", epochs=2), run_dir)
    one = trainer.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(16)))
    two = trainer.handle(TrainRequest(request_id="t2", round=2, examples=lower_examples(16)))
    assert two.metrics["loss_first"] < one.metrics["loss_first"]


def test_trainer_nan_loss_raises_and_keeps_the_previous_adapter(run_dir):
    trainer = started(StarTrainer, make_cfg(epochs=1), run_dir)
    trainer.handle(TrainRequest(request_id="t1", round=1, examples=lower_examples(8)))
    bad = started(StarTrainer, make_cfg(epochs=2, lr=float("inf")), run_dir)
    with pytest.raises(FloatingPointError):
        bad.handle(TrainRequest(request_id="t2", round=2, examples=lower_examples(16)))
    assert not (run_dir / "adapters" / "v2").exists() and bad.last_version == 1
