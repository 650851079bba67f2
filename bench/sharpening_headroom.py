"""How much pass@1 a base model leaves to sharpening: pass@1/8/32 at lower temperatures.

    python bench/sharpening_headroom.py BASE_DIR [--set task.depths=[1,2]] [--temperatures 1.0 0.7 0.5 0.3]

Self-training on a model's own correct samples can at best concentrate it on
what it already finds; lowering the sampling temperature is the cheapest such
concentration. If pass@1 at temperature 0.3 is far above pass@1 at 1.0 there
is pass@1 to gain by sharpening, and a STaR round that does not gain it is not
sharpening towards correctness. Evaluates the first ``--n-eval`` evaluation
problems of the tiny preset's split (overrides with --set) x 32 samples.
"""

import argparse

import torch

from constellation.algorithms.passk import mean_pass_at_k
from constellation.models.lm import load_model, sample
from constellation.protocol import config as config_mod
from constellation.protocol.messages import Candidate
from constellation.tasks.dsl import make_split
from verifiers.dsl import verify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("--set", action="append", default=[], help="config override of the tiny preset")
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7, 0.5, 0.3])
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = config_mod.load("tiny", a.set)
    problems = make_split(cfg.task, cfg.task_seed()).eval[:a.n_eval]
    model, tok = load_model(a.base)
    for t in a.temperatures:
        outs = sample(model, tok, [p.prompt for p in problems], k=32, temperature=t, top_p=1.0,
                      max_new_tokens=64, seed=1, batch_size=64)
        counts = [(32, sum(bool(verify(p, Candidate(id=f"{p.id}/{i}", problem_id=p.id, text=text, logprob=0.0,
                                                    adapter_version=0)).heldout_correct)
                           for i, (text, _) in enumerate(samples)))
                  for p, samples in zip(problems, outs)]
        row = {k: round(100 * v, 1) for k, v in mean_pass_at_k(counts, [1, 8, 32]).items()}
        print(f"temperature {t}: pass@1 {row[1]}%  pass@8 {row[8]}%  pass@32 {row[32]}%", flush=True)


if __name__ == "__main__":
    main()
