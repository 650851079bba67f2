"""One round of preference pairs as the coordinator builds them for a trainer
that wants pairs: judge (self_judge only), build (algorithms/pairs.py), save
this round's pairs under RUN_DIR/pairs/, mix in earlier rounds' pairs with
decayed weights. The pair logic is pure and lives in the algorithms layer;
this module adds the judge round trip and the files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from constellation.algorithms.pairs import build_pairs, check_pairs_config, count_by_source, mix_earlier, with_judgments
from constellation.algorithms.selection import Sample
from constellation.protocol.messages import JudgeItem, Judgments, PreferencePair


def round_pairs(cfg: Any, run_dir: str | Path, round: int, pools: Mapping[str, Sequence[Sample]],
                prompts: Mapping[str, str], judge: Callable[[list[JudgeItem]], Judgments] | None = None,
                seed: int = 0) -> tuple[list[PreferencePair], dict[str, Any]]:
    """One round of pair building as the coordinator runs it, for a [pairs]
    config ``cfg``: judge (self_judge only), build, save this round's pairs
    under run_dir/pairs/, add earlier rounds' pairs with decayed weights.
    -> (pairs for the trainer, counts for the metrics event)."""
    check_pairs_config(cfg.source, cfg.among, cfg.max_per_problem, cfg.min_margin, cfg.judge, cfg.mix_rounds,
                       cfg.mix_decay, cfg.holdout_frac)
    info: dict[str, Any] = {"source": cfg.source}
    if cfg.source == "self_judge":
        if judge is None:
            raise ValueError('pairs.source = "self_judge" needs a judge (the trainer)')
        items = [JudgeItem(candidate_id=s.candidate_id, problem_id=pid, prompt=prompts[pid], text=s.text)
                 for pid, pool in pools.items() for s in pool
                 if s.text is not None and (cfg.among == "all" or s.visible_pass)]
        judged = judge(items) if items else Judgments(request_id="", candidate_ids=[], scores=[])
        if len(judged.scores) != len(judged.candidate_ids):
            raise ValueError(f"judgments: {len(judged.candidate_ids)} ids but {len(judged.scores)} scores")
        pools = with_judgments(pools, dict(zip(judged.candidate_ids, judged.scores)))
        info.update(judge_method=judged.method, n_judge_items=len(items),
                    n_judged=sum(x is not None for x in judged.scores))
    current = build_pairs(pools, prompts, cfg.source, round=round, among=cfg.among,
                          max_per_problem=cfg.max_per_problem, dedup=cfg.dedup, min_margin=cfg.min_margin, seed=seed)
    save_round_pairs(run_dir, round, current)
    earlier = load_round_pairs(run_dir, range(max(1, round - cfg.mix_rounds), round))
    mixed = mix_earlier(current, earlier, round, cfg.mix_rounds, cfg.mix_decay)
    info.update(n_pairs=len(current), n_earlier=len(mixed) - len(current), n_problems=len(pools),
                n_problems_with_pairs=len({p.problem_id for p in current}), by_source=count_by_source(mixed))
    return mixed, info


# Persistence: each round's pairs, so earlier rounds can be mixed in after a
# coordinator restart. Written by the coordinator only, atomically.

_pairs_codec = msgspec.msgpack.Decoder(list[PreferencePair])


def save_round_pairs(run_dir: str | Path, round: int, pairs: list[PreferencePair]) -> Path:
    path = Path(run_dir) / "pairs" / f"round-{round}.msgpack"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.msgpack.encode(pairs))
    tmp.replace(path)
    return path


def load_round_pairs(run_dir: str | Path, rounds: Iterable[int]) -> dict[int, list[PreferencePair]]:
    """Rounds whose file is missing are absent from the result."""
    out = {}
    for r in rounds:
        path = Path(run_dir) / "pairs" / f"round-{r}.msgpack"
        if path.exists():
            out[r] = _pairs_codec.decode(path.read_bytes())
    return out
