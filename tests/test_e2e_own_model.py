"""End to end with your own model and data: tiny random-init Qwen3 / Llama HF
folders with chat templates (tests/tiny_hf.py) as model.base, the "hf" task
on GSM8K files (eval: the real test split in ../shared/data/gsm8k, train: a
separate source), through both generators (vLLM from .venv-vllm)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from smoke_run import up_smoke
from tiny_hf import build_tiny_hf

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


def own_run(tmp_path: Path, model_cache: Path, kind: str, *sets: str) -> tuple[Path, list[ev.Event]]:
    base = build_tiny_hf(kind, tmp_path / kind, seed=2)
    lines = GSM8K_TEST.read_text().splitlines()
    train = tmp_path / "train.jsonl"  # a separate train source (GSM8K's own fields and format)
    train.write_text("\n".join(lines[-40:]) + "\n")
    return up_smoke(tmp_path, model_cache, f'model.base="{base}"', 'task.impl="constellation.tasks.hf"',
                    f'task.eval_source="{GSM8K_TEST}"', f'task.train_source="{train}"', "task.n_eval=4",
                    "task.n_train=8", "task.n_labeled=0", 'task.extract="last_boxed"', "sampling.max_new_tokens=24",
                    "coordinator.k=2", "coordinator.problems_per_round=4", "coordinator.rationalize=true",
                    "eval.n_samples=4", "eval.ks=[1,2,4]", "eval.selection_k=2", "eval.selection_ks=[2,4]",
                    "guard.val_problems=2", "guard.val_samples=2", "model.max_len=1024", *sets)


def check_run(run_dir: Path, events: list[ev.Event]) -> None:
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]
    db = sqlite3.connect(run_dir / "run.sqlite")
    assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == db.execute(
        "SELECT COUNT(*) FROM candidates").fetchone()[0] > 0
    eval_ids = {i for (i,) in db.execute("SELECT id FROM problems WHERE split = 'eval'")}
    assert eval_ids and all(i.startswith("eval-") for i in eval_ids)
    db.close()


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="../shared/data/gsm8k is not on this machine")
def test_tiny_qwen3_folder_with_the_hf_generator_on_gsm8k_files(tmp_path, model_cache):
    run_dir, events = own_run(tmp_path, model_cache, "qwen3", 'verifier.impl="math"', 'critic.impl="policy_head"',
                              "critic.lora_r=4", "critic.max_len=128", 'generator.device="auto"')
    check_run(run_dir, events)


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="../shared/data/gsm8k is not on this machine")
def test_tiny_llama_folder_with_the_vllm_generator_and_math_verify(tmp_path, model_cache, vllm_python):
    pytest.importorskip("math_verify")
    run_dir, events = own_run(tmp_path, model_cache, "llama", 'generator.impl="vllm"',
                              f'generator.python="{vllm_python}"', "generator.max_lora_rank=16",
                              'verifier.impl="roles.verifier_math_verify:MathVerifyVerifier"')
    check_run(run_dir, events)
    assert "LLM engine (v0.32.0)" in (run_dir / "logs" / "generator.log").read_text()
