"""Run by the .venv-vllm interpreter from tests/test_generator_vllm.py: drives the
vLLM generator role through its Role interface and prints one JSON line of
observations for the parent test to check.

argv: RUN_DIR ADAPTER_V1 ADAPTER_V2 ADAPTER_TOO_BIG SWAPS"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from constellation.protocol.config import from_dict
from constellation.protocol.messages import GenerateRequest, LoadAdapter, Problem, Sampling
from roles.generator_vllm import AdapterNotServable, VllmGenerator


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    run_dir, v1, v2, too_big, swaps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    cfg = from_dict({"model": {"max_len": 64}, "trainer": {"lora_r": 8, "lora_targets": ["q_proj", "v_proj"]},
                     "generator": {"max_lora_rank": 8, "gpu_memory_utilization": 0.15}})
    role = VllmGenerator(cfg, Path(run_dir))
    info = role.setup()
    problems = [Problem(id=f"p{i}", task="toy", prompt=w, data={}, reference="")
                for i, w in enumerate(["redblue=>", "fastdata=>"])]

    def generate(tag: str):
        req = GenerateRequest(request_id=tag, problems=problems, k=4, sampling=Sampling(max_new_tokens=12, seed=3),
                              adapter_version=role.version, candidate_prefix="eval/0")
        return [[c.id, c.text, c.logprob, c.adapter_version] for c in role.handle(req).items]

    out = {"info": info, "base": generate("g0"), "base_again": generate("g0b")}
    # more prompt tokens than one engine step takes (vLLM's CPU budget: 4096): would split prefills
    many = [Problem(id=f"m{i}", task="toy", prompt=("redbluefastdata" * 3)[i % 7:][:40] + "=>", data={}, reference="")
            for i in range(120)]
    req = GenerateRequest(request_id="many", problems=many, k=2, sampling=Sampling(max_new_tokens=8, seed=5),
                          adapter_version=0, candidate_prefix="eval/m")
    out["many"] = len(role.handle(req).items)
    role.handle(LoadAdapter(request_id="l1", version=1, path=v1))
    out["v1"] = generate("g1")
    out["resent_seconds"] = role.handle(LoadAdapter(request_id="l1b", version=1, path=v1)).seconds
    try:
        role.handle(LoadAdapter(request_id="lx", version=9, path=too_big))
        out["too_big_error"] = ""
    except AdapterNotServable as e:
        out["too_big_error"] = str(e)
    out["after_refusal_version"] = role.version
    rss, held = [], []
    for i in range(swaps):  # alternate v2 / v1 under fresh versions
        role.handle(LoadAdapter(request_id=f"s{i}", version=10 + i, path=v2 if i % 2 == 0 else v1))
        out.setdefault("swapped", generate(f"gs{i}"))
        rss.append(rss_mib())
        held.append(role.loras_held())
    out["rss_mib"], out["loras_held"] = rss, held
    out["last_version"] = role.version
    role.handle(LoadAdapter(request_id="b", version=0, path=""))
    out["back_to_base"] = generate("g0c")
    out["loras_held_on_base"] = role.loras_held()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
