"""launch/memory_plan.py: the one-GPU memory arithmetic and the start-up check of `constellation up`,
and the supervisor's per-role interpreter (generator.python)."""

from __future__ import annotations

import json
import sys

import pytest

from constellation.protocol import config
from launch.memory_plan import (GIB, KNOWN_SHAPES, PlanDoesNotFit, check_plan, gpu_memory_check, model_shape,
                                       plan_memory, probe_gpu)
from launch.supervisor import SupervisorError, role_python

QWEN3_4B = model_shape(KNOWN_SHAPES["qwen3-4b"])


def test_qwen3_4b_shape_has_its_published_4b_parameters():
    total = QWEN3_4B.linear_params() + QWEN3_4B.other_params()
    assert 3.9e9 < total < 4.1e9, total
    assert QWEN3_4B.kv_bytes_per_token(2) == 2 * 36 * 8 * 128 * 2  # 144 KiB per token in bf16


def test_nf4_base_is_about_an_eighth_of_float32_linears():
    cfg = config.load("qwen3-4b-24gb")
    nf4 = {it.part: it.bytes for it in plan_memory(cfg, QWEN3_4B, 24 * GIB) if it.process == "trainer"}
    cfg_fp = config.load("qwen3-4b-24gb", ['model.quantization="none"', 'model.compute_dtype="float32"'])
    fp = {it.part: it.bytes for it in plan_memory(cfg_fp, QWEN3_4B, 24 * GIB) if it.process == "trainer"}
    assert fp["float32 weights"] > 4.5 * nf4["NF4 linears + float32 embeddings/norms"]


def test_an_unquantized_base_is_planned_in_the_compute_dtype():
    bf16 = config.load("qwen3-4b-24gb", ['model.quantization="none"'])
    parts = {it.part: it.bytes for it in plan_memory(bf16, QWEN3_4B, 24 * GIB) if it.process == "trainer"}
    assert parts["bfloat16 weights"] == 2 * (QWEN3_4B.linear_params() + QWEN3_4B.other_params())


def test_each_role_on_the_card_counts_and_a_cpu_role_does_not():
    every = {it.process for it in plan_memory(config.load("gsm8k"), QWEN3_4B, 24 * GIB)}
    assert every == {"generator", "trainer", "critic"}
    cpu_critic = config.load("gsm8k", ['critic.device="cpu"', 'trainer.device="cuda:0"'])
    assert {it.process for it in plan_memory(cpu_critic, QWEN3_4B, 24 * GIB)} == {"generator", "trainer"}


def test_the_gsm8k_preset_fits_a_24_gib_card():
    check_plan(plan_memory(config.load("gsm8k"), QWEN3_4B, 24 * GIB), free_bytes=int(23.3 * GIB))


def test_the_qwen3_preset_fits_a_24_gib_card_and_not_a_16_gib_one():
    cfg = config.load("qwen3-4b-24gb")
    check_plan(plan_memory(cfg, QWEN3_4B, 24 * GIB), free_bytes=int(23.3 * GIB))  # a 24 GB card's usual free
    with pytest.raises(PlanDoesNotFit, match=r"needs \d+\.\d\d GiB but 15\.50 GiB are free"):
        check_plan(plan_memory(cfg, QWEN3_4B, 16 * GIB), free_bytes=int(15.5 * GIB))


def test_gpu_check_is_skipped_without_cuda(tmp_path):
    assert "skipped" in gpu_memory_check(config.load("tiny"), tmp_path, gpu={"cuda": False})


def test_gpu_check_refuses_with_the_numbers_when_the_card_is_busy(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(KNOWN_SHAPES["qwen3-4b"]))
    gpu = {"cuda": True, "free": 10 * GIB, "total": 24 * GIB, "name": "test card"}
    with pytest.raises(PlanDoesNotFit) as e:
        gpu_memory_check(config.load("qwen3-4b-24gb"), tmp_path, gpu=gpu)
    assert "10.00 GiB are free" in str(e.value) and "vLLM reserve 0.40" in str(e.value)


def test_gpu_check_of_an_unknown_architecture_is_skipped_with_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    gpu = {"cuda": True, "free": 10 * GIB, "total": 24 * GIB, "name": "test card"}
    assert "skipped" in gpu_memory_check(config.load("tiny"), tmp_path, gpu=gpu)


def test_memory_plan_against_the_real_card(tmp_path):
    gpu = probe_gpu()
    if not gpu["cuda"]:
        pytest.skip("GPU-only: no CUDA device on this machine")
    (tmp_path / "config.json").write_text(json.dumps(KNOWN_SHAPES["qwen3-4b"]))
    assert gpu["total"] > 0 and 0 < gpu["free"] <= gpu["total"]
    if gpu["total"] >= 23 * GIB:
        assert "fits" in gpu_memory_check(config.load("qwen3-4b-24gb"), tmp_path, gpu=gpu)


def test_generator_python_applies_to_the_generator_only(tmp_path):
    cfg = config.load("tiny", [f'generator.python="{sys.executable}"'])
    assert role_python(cfg, "generator") == sys.executable
    assert role_python(config.load("tiny"), "generator") == sys.executable
    cfg = config.load("tiny", ['generator.python="/nonexistent/.venv-vllm/bin/python"'])
    assert role_python(cfg, "trainer") == sys.executable
    with pytest.raises(SupervisorError, match="'/nonexistent/.venv-vllm/bin/python'.*make_vllm_venv"):
        role_python(cfg, "generator")
