"""Is the warm-started base model in the zone of proximal development, and does
one STaR round help? Runs in-process, no sockets:

    make_split -> ensure_base_model (warm start or cache) -> eval base
    -> one STaR round (sample k per training problem, keep one visible-pass
       candidate per problem, fresh LoRA from the base) -> eval again

and prints pass@1/8/n on the eval set (held-out correct, n samples per
problem at the sampling temperature), per depth, plus sampling throughput.

    .venv/bin/python bench/zpd_probe.py                     # default configs
    .venv/bin/python bench/zpd_probe.py --set model.warm_start_seconds=120 --set task.n_visible=4
    .venv/bin/python bench/zpd_probe.py --compare-generate  # fast loop vs model.generate

The defaults (0.87M parameters: hidden 128, 4 layers, batch 8, prompt loss
0.5, 8000 labeled problems, 480 s) came out of this probe: on 1 thread they
put the base in the ZPD (eval pass@1 0.27 on 200 problems). The number of
optimizer steps decides it: a 1.8M-parameter shape (hidden 192) gets too few
in 240 s (pass@1 ~0.03); a 0.22M one (hidden 64) reaches ~0.27-0.29 in 240 s.
A single STaR round moves pass@8 by a few points either way: compare variants
over several seeds (--set run.seed=N) before believing such a difference.

``--set section.key=value`` overrides any config field, as on the CLI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from constellation.protocol.config import Config, apply_overrides, from_dict  # noqa: E402
from constellation.protocol.messages import Candidate, TrainExample  # noqa: E402
from constellation.algorithms.passk import pass_at_k  # noqa: E402


def evaluate(model, tokenizer, problems, n: int, cfg: Config, seed: int, label: str) -> dict[str, float]:
    """n samples per problem -> pass@k (held-out correct) overall and pass@1 per depth."""
    from constellation.models.lm import sample
    from verifiers.dsl import verify

    t0 = time.monotonic()
    outs = sample(model, tokenizer, [p.prompt for p in problems], k=n, temperature=cfg.sampling.temperature,
                  top_p=cfg.sampling.top_p, max_new_tokens=cfg.sampling.max_new_tokens, seed=seed,
                  batch_size=cfg.generator.batch_size)
    gen_s = time.monotonic() - t0
    counts = []
    for p, samples in zip(problems, outs):
        verdicts = [verify(p, Candidate(id=f"e/{p.id}/{i}", problem_id=p.id, text=t, logprob=lp, adapter_version=0))
                    for i, (t, lp) in enumerate(samples)]
        counts.append((p, sum(bool(v.heldout_correct) for v in verdicts), sum(v.status == "pass" for v in verdicts)))
    res = {f"pass@{k}": sum(pass_at_k(n, c, k) for _, c, _ in counts) / len(counts) for k in (1, 8, n) if k <= n}
    res["visible_pass@1"] = sum(v / n for _, _, v in counts) / len(counts)
    by_depth = defaultdict(list)
    for p, c, _ in counts:
        by_depth[p.difficulty].append(c / n)
    depth_txt = "  ".join(f"d{d}={sum(v) / len(v):.2f}" for d, v in sorted(by_depth.items()))
    cps = n * len(problems) / gen_s
    print(f"[{label}] " + "  ".join(f"{k}={v:.3f}" for k, v in res.items())
          + f"  | pass@1 by depth: {depth_txt} | {n * len(problems)} samples in {gen_s:.1f}s = {cps:.0f} cand/s",
          flush=True)
    res["cand_per_s"] = cps
    return res


def star_round(model, tokenizer, base_path, problems, cfg: Config, k: int, seconds: float, seed: int, out_dir: Path,
               per_problem: int = 1):
    from constellation.models.lm import LoraArgs, SFTArgs, load_model, sample, train_sft
    from verifiers.dsl import verify

    t0 = time.monotonic()
    outs = sample(model, tokenizer, [p.prompt for p in problems], k=k, temperature=cfg.sampling.temperature,
                  top_p=cfg.sampling.top_p, max_new_tokens=cfg.sampling.max_new_tokens, seed=seed,
                  batch_size=cfg.generator.batch_size)
    gen_s = time.monotonic() - t0
    examples, correct, solved = [], 0, 0
    for p, samples in zip(problems, outs):
        kept: set[str] = set()  # up to per_problem distinct visible-pass programs
        for i, (text, lp) in enumerate(samples):
            if len(kept) == per_problem or text in kept:
                continue
            v = verify(p, Candidate(id=f"t/{p.id}/{i}", problem_id=p.id, text=text, logprob=lp, adapter_version=0))
            if v.status == "pass":
                kept.add(text)
                examples.append(TrainExample(problem_id=p.id, prompt=p.prompt, completion=text))
                correct += bool(v.heldout_correct)
        solved += bool(kept)
    print(f"[star] sampled {k}x{len(problems)} in {gen_s:.1f}s ({k * len(problems) / gen_s:.0f} cand/s); "
          f"{solved} problems solved on visible; {len(examples)} examples, {correct} held-out correct", flush=True)
    t = cfg.trainer
    lora = LoraArgs(r=t.lora_r, alpha=t.lora_alpha, dropout=t.lora_dropout, targets=tuple(t.lora_targets))
    metrics = train_sft(base_path, examples, out_dir, SFTArgs(lora=lora, lr=t.lr, epochs=t.epochs, max_seconds=seconds,
                                                              batch_size=t.batch_size, seed=seed))
    print(f"[star] train_sft: {metrics}", flush=True)
    return load_model(base_path, str(out_dir))


def compare_generate(model, tokenizer, problems, cfg: Config) -> None:
    from constellation.models.lm import sample

    prompts = [p.prompt for p in problems[:16]]
    for p_per_call, k in ((8, 8), (1, 64)):
        times = {}
        for method in ("fast", "generate"):
            t0 = time.monotonic()
            sample(model, tokenizer, prompts, k=k, max_new_tokens=cfg.sampling.max_new_tokens, seed=0,
                   batch_size=p_per_call * k, method=method)
            times[method] = time.monotonic() - t0
        n = len(prompts) * k
        print(f"[compare] {p_per_call} prompts x k={k} per call: fast {n / times['fast']:.0f} cand/s, "
              f"generate {n / times['generate']:.0f} cand/s -> fast is {times['generate'] / times['fast']:.1f}x",
              flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    ap.add_argument("--n", type=int, default=32, help="samples per eval problem")
    ap.add_argument("--star-problems", type=int, default=150, help="training problems of the STaR round")
    ap.add_argument("--star-k", type=int, default=8, help="candidates sampled per training problem")
    ap.add_argument("--star-per-problem", type=int, default=1, help="distinct visible-pass programs kept per problem")
    ap.add_argument("--star-seconds", type=float, default=60.0, help="train_sft time budget (epochs: trainer.epochs)")
    ap.add_argument("--no-star", action="store_true", help="only warm start and evaluate the base")
    ap.add_argument("--prompt-loss", type=float, default=None,
                    help="warm-start weight of the LM loss on prompt tokens (default: model.warm_start_prompt_loss or 0)")
    ap.add_argument("--compare-generate", action="store_true", help="time the fast loop against model.generate")
    args = ap.parse_args(argv)

    from roles.base import set_torch_threads

    cfg = from_dict(apply_overrides({}, args.set))
    set_torch_threads(1)
    from constellation.models.lm import ensure_base_model, load_model
    from constellation.tasks.dsl import make_split

    t0 = time.monotonic()
    split = make_split(cfg.task, cfg.task_seed())
    print(f"split: {len(split.labeled)} labeled, {len(split.train)} train, {len(split.eval)} eval "
          f"({time.monotonic() - t0:.1f}s)", flush=True)
    last = [0.0]

    def progress(frac: float, msg: str) -> None:
        if frac - last[0] >= 0.1 or frac >= 1.0:
            last[0] = frac
            print(f"  {frac:4.0%} {msg}", flush=True)

    t0 = time.monotonic()
    base_path = ensure_base_model(cfg.model, cfg.task, cfg.task_seed(), split.labeled, progress=progress,
                                  prompt_loss_weight=args.prompt_loss)
    print(f"base model: {base_path} ({time.monotonic() - t0:.0f}s)", flush=True)
    ws = base_path / "warm_start.json"
    if ws.exists():
        import json

        w = json.loads(ws.read_text())
        print(f"  warm start: {w['n_params'] / 1e6:.2f}M params, {w['steps']} steps in {w['seconds']:.0f}s, "
              f"loss {w['loss_first']:.3f} -> {w['loss_last']:.3f}", flush=True)
    model, tokenizer = load_model(base_path)
    if args.compare_generate:
        compare_generate(model, tokenizer, split.eval, cfg)
    base = evaluate(model, tokenizer, split.eval, args.n, cfg, seed=1, label="base")
    zpd = cfg.eval.zpd_low <= base["pass@1"] <= cfg.eval.zpd_high
    print(f"base pass@1 {base['pass@1']:.3f} is {'inside' if zpd else 'OUTSIDE'} the ZPD "
          f"[{cfg.eval.zpd_low}, {cfg.eval.zpd_high}]", flush=True)
    if args.no_star:
        return
    with tempfile.TemporaryDirectory() as tmp:
        model1, tok1 = star_round(model, tokenizer, base_path, split.train[:args.star_problems], cfg,
                                  args.star_k, args.star_seconds, seed=2, out_dir=Path(tmp) / "v1",
                                  per_problem=args.star_per_problem)
        after = evaluate(model1, tok1, split.eval, args.n, cfg, seed=1, label="star round 1")
    print("pass@8 base -> round 1: {:.3f} -> {:.3f} ({})".format(
        base["pass@8"], after["pass@8"], "up" if after["pass@8"] > base["pass@8"] else "NOT up"), flush=True)


if __name__ == "__main__":
    main()
