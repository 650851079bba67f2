"""The STaR round-1 dose on one base model: which training changes held-out pass@1?

    python bench/star_dose.py BASE_DIR OUT.jsonl [--set task.depths=[1,2]] \
        --variants full:1e-4:40,oracle:1e-4:40,lora:1e-3:60

Samples the first ``--n-train`` training problems of the tiny preset's split x 8
once with the base (temperature 1), keeps one random distinct visible-pass
program per solved problem (STaR's selection; ``--per-problem`` more), then for
each variant trains a fresh copy of the base and evaluates ``--n-eval``
evaluation problems x ``--n`` samples with the same seeds as the base.

A variant is KIND:LR:STEPS[:BATCH]: KIND "full" (every weight, STaR data),
"lora" (LoRA r16 on every projection, STaR data) or "oracle" (full fine-tuning
on the reference programs of the same training problems: the trainer control's
data). Batches are drawn with replacement; AdamW, weight decay 0.01, warmup +
cosine over the steps (constellation/models/fit.py). Prints pass@1/8/32, the
pass@1 change with a normal 95% interval over problems, and the loss; appends
a JSON line per variant to OUT.jsonl. The base folder is a cached tiny base
(~/.cache/constellation/tiny-*), e.g. the one `make run` built.
"""
import argparse
import json
import math
import random
import time

import torch

torch.set_num_threads(1)
from constellation.protocol import config as C  # noqa: E402
from constellation.protocol.messages import Candidate  # noqa: E402
from constellation.tasks.dsl import make_split  # noqa: E402
from verifiers.dsl import verify  # noqa: E402
from constellation.models.lm import load_model, sample  # noqa: E402
from constellation.models.base_model import encode_example, collate  # noqa: E402
from constellation.models.fit import fit, FitArgs  # noqa: E402
from constellation.algorithms.passk import mean_pass_at_k  # noqa: E402


def gen(model, tok, problems, k, seed):
    outs = sample(model, tok, [p.prompt for p in problems], k=k, temperature=1.0, top_p=1.0,
                  max_new_tokens=64, seed=seed, batch_size=64)
    res = []
    for p, samples in zip(problems, outs):
        vs = [verify(p, Candidate(id=f"{p.id}/{i}", problem_id=p.id, text=t, logprob=lp, adapter_version=0))
              for i, (t, lp) in enumerate(samples)]
        res.append([(t, v) for (t, _), v in zip(samples, vs)])
    return res


def evaluate(model, tok, problems, n, seed):
    res = gen(model, tok, problems, n, seed)
    counts = [(n, sum(1 for _, v in r if v.status == "pass" and v.heldout_correct)) for r in res]
    per = [c / n for _, c in counts]
    return mean_pass_at_k(counts, [1, 8, 32]), per


def train(base, tok, examples, lr, steps, bs, seed, lora=0):
    model, _ = load_model(base)
    if lora:
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(r=lora, lora_alpha=2 * lora, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    for p in model.parameters():
        if not lora:
            p.requires_grad_(True)
    pairs = [encode_example(tok, pr, co) for pr, co in examples]
    rng = random.Random(seed)

    def batches(_e):
        while True:
            yield [rng.randrange(len(pairs)) for _ in range(bs)]

    def loss_fn(b):
        ids, mask, labels = collate([pairs[i] for i in b], tok.pad_token_id)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    r = fit(model, batches, loss_fn, FitArgs(lr=lr, epochs=0, max_steps=steps, weight_decay=0.01,
                                             warmup_steps=min(10, steps // 10 + 1)))
    if lora:
        model = model.merge_and_unload()
    model.eval()
    return model, r.losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--variants", default="full:1e-4:40")
    ap.add_argument("--per-problem", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    cfg = C.load("tiny", a.set)
    split = make_split(cfg.task, cfg.task_seed())
    base_model, tok = load_model(a.base)
    train_p = split.train[a.seed * a.n_train:(a.seed + 1) * a.n_train]
    eval_p = split.eval[:a.n_eval]
    t0 = time.time()
    base_scores, base_per = evaluate(base_model, tok, eval_p, a.n, 1234)
    print("base", base_scores, f"{time.time()-t0:.0f}s", flush=True)
    res = gen(base_model, tok, train_p, 8, 99 + a.seed)
    rng = random.Random(a.seed)
    examples = []
    for p, r in zip(train_p, res):
        passing = sorted({t.strip() for t, v in r if v.status == "pass"})
        rng.shuffle(passing)
        examples += [(p.prompt, t) for t in passing[:a.per_problem]]
    oracle = [(p.prompt, p.reference) for p in train_p]
    print("selected", len(examples), "solved-problems", sum(1 for r in res if any(v.status == "pass" for _, v in r)),
          flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps({"variant": "base", "seed": a.seed, "scores": base_scores, "per": base_per}) + "\n")
    for var in a.variants.split(","):
        kind, lr, steps, *rest = var.split(":")
        bs = int(rest[0]) if rest else 32
        data = oracle if kind.startswith("oracle") else examples
        lora = 16 if kind.endswith("lora") else 0
        t0 = time.time()
        model, losses = train(a.base, tok, data, float(lr), int(steps), bs, a.seed, lora)
        scores, per = evaluate(model, tok, eval_p, a.n, 1234)
        d = [x - y for x, y in zip(per, base_per)]
        mean = sum(d) / len(d)
        sd = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5 / math.sqrt(len(d))
        print(var, {k: round(v * 100, 1) for k, v in scores.items()}, f"d1={mean*100:+.1f}+-{1.96*sd*100:.1f}",
              f"loss {losses[0]:.3f}->{losses[-1]:.3f}", f"{time.time()-t0:.0f}s", flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps({"variant": var, "seed": a.seed, "scores": scores, "per": per,
                                "loss_last": losses[-1], "n_examples": len(data)}) + "\n")


if __name__ == "__main__":
    main()
