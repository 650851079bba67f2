"""Run by the .venv-vllm interpreter from tests/test_generator_vllm.py: the vLLM
generator role on a tiny own-model folder with a chat template (tests/tiny_hf.py),
with a stop string and one adapter swap; prints one JSON line.

argv: RUN_DIR ADAPTER"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from constellation.protocol.config import from_dict
from constellation.protocol.messages import GenerateRequest, LoadAdapter, Problem, Sampling
from roles.generator_vllm import VllmGenerator

PROMPTS = ["Q: 12+7?\n", "Q: 3*4?\n"]


def main() -> None:
    run_dir, adapter = sys.argv[1], sys.argv[2]
    cfg = from_dict({"model": {"max_len": 128}, "task": {"stop": ["a"]},
                     "trainer": {"lora_r": 8, "lora_targets": ["q_proj", "v_proj"]},
                     "generator": {"max_lora_rank": 8, "gpu_memory_utilization": 0.1}})
    role = VllmGenerator(cfg, Path(run_dir))
    info = role.setup()
    seen: list[list[int]] = []
    real = role.llm.generate

    def spy(prompts, *a, **kw):
        seen.extend(list(p["prompt_token_ids"]) for p in prompts)
        return real(prompts, *a, **kw)
    role.llm.generate = spy
    problems = [Problem(id=f"p{i}", task="math", prompt=p, data={}, reference="") for i, p in enumerate(PROMPTS)]

    def generate(tag: str):
        req = GenerateRequest(request_id=tag, problems=problems, k=4, sampling=Sampling(max_new_tokens=24, seed=3),
                              adapter_version=role.version, candidate_prefix="eval/0")
        return [[c.id, c.text, c.logprob, c.adapter_version] for c in role.handle(req).items]

    out = {"info": info, "base": generate("g0")}
    role.handle(LoadAdapter(request_id="l1", version=1, path=adapter))
    out["v1"] = generate("g1")
    out["prompt_ids"] = seen[:len(PROMPTS)]
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
