"""Preference pairs for DPO: (prompt, chosen, rejected) from one problem's candidates.

Pure logic, no torch: the coordinator calls ``build_pairs`` on each round's
candidate pools (lists of ``selection.Sample``) when the trainer wants pairs
(roles/trainer_dpo.py); runtime/pairing.py runs a round of it and keeps the
pairs of earlier rounds.

Sources (``pairs.source``):
  verifier    chosen = a candidate that reproduces every visible example,
              rejected = one that does not. In this project the training signal
              is the verifier's *visible* result (STaR keeps visible-pass
              candidates too); held-out correctness is only for measurement
              and is never read here.
  critic      ranked by the learned critic's score P(correct): the best against
              the worst, the second best against the second worst, ...
              ``among = "pass"`` ranks only visible-pass candidates (the critic
              then separates programs that fit the examples from ones that
              generalise), ``"all"`` ranks every candidate.
  self_judge  the same ranking on scores the policy gave its own candidates
              (``Sample.score`` replaced by the trainer's judgments, see
              roles/trainer_dpo.py); ``parse_judgment`` reads an LLM judge's
              0-5 answer.

Guarantees:
  * A problem yields pairs only if it has at least one chosen and one
    rejected candidate under the source; at most ``max_per_problem`` pairs.
  * chosen text != rejected text in every pair (an identical pair teaches
    nothing); with ``dedup`` a completion is used once per problem.
  * Ranked sources keep a pair only if margin = score(chosen) - score(rejected)
    is > 0 and >= ``min_margin``; candidates without a score (None/NaN) are
    left out, never treated as 0.
  * Deterministic for a given rng seed and pool order.
Not guaranteed: that a chosen candidate is held-out correct.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from constellation.protocol.messages import PreferencePair
from constellation.algorithms.selection import Sample

SOURCES = ("verifier", "critic", "self_judge")
AMONG = ("pass", "all")
JUDGES = ("auto", "likelihood", "llm")


def check_pairs_config(source: str, among: str = "pass", max_per_problem: int = 1, min_margin: float = 0.0,
                       judge: str = "auto", mix_rounds: int = 0, mix_decay: float = 0.5,
                       holdout_frac: float = 0.0) -> None:
    """Raise ValueError naming the first bad [pairs] value."""
    if source not in SOURCES:
        raise ValueError(f"pairs.source must be one of {SOURCES}, got {source!r}")
    if among not in AMONG:
        raise ValueError(f"pairs.among must be one of {AMONG}, got {among!r}")
    if judge not in JUDGES:
        raise ValueError(f"pairs.judge must be one of {JUDGES}, got {judge!r}")
    if max_per_problem < 1:
        raise ValueError(f"pairs.max_per_problem must be >= 1, got {max_per_problem}")
    if not math.isfinite(min_margin) or min_margin < 0:
        raise ValueError(f"pairs.min_margin must be a finite number >= 0, got {min_margin}")
    if mix_rounds < 0:
        raise ValueError(f"pairs.mix_rounds must be >= 0, got {mix_rounds}")
    if not 0.0 <= mix_decay <= 1.0:
        raise ValueError(f"pairs.mix_decay must be in [0, 1], got {mix_decay}")
    if not 0.0 <= holdout_frac < 1.0:
        raise ValueError(f"pairs.holdout_frac must be in [0, 1), got {holdout_frac}")


def _dedup(pool: Sequence[Sample]) -> list[Sample]:
    """First occurrence of each completion text (whitespace-trimmed)."""
    seen: set[str] = set()
    out = []
    for s in pool:
        key = (s.text or "").strip()
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _has_score(s: Sample) -> bool:
    return s.score is not None and not math.isnan(s.score)


def pairs_for_problem(pool: Sequence[Sample], source: str, *, among: str = "pass", max_per_problem: int = 1,
                      dedup: bool = True, min_margin: float = 0.0,
                      rng: random.Random | None = None) -> list[tuple[Sample, Sample, float]]:
    """-> up to ``max_per_problem`` (chosen, rejected, margin) from one pool.

    verifier: good and bad candidates are shuffled (rng) and paired i-th with
    i-th, cycling the shorter list, so every candidate appears once before any
    appears twice and no pair repeats. Margin is 1.
    critic / self_judge: sorted by score (ties by pool order), pair i is
    (i-th best, i-th worst) for i < n // 2, stopping at the first pair under
    the margin (later pairs have smaller margins)."""
    if source not in SOURCES:
        raise ValueError(f"pairs.source must be one of {SOURCES}, got {source!r}")
    cands = [s for s in pool if s.text is not None]
    if dedup:
        cands = _dedup(cands)
    out: list[tuple[Sample, Sample, float]] = []
    if source == "verifier":
        good = [s for s in cands if s.visible_pass]
        bad = [s for s in cands if not s.visible_pass]
        if not good or not bad:
            return []
        rng = rng or random.Random(0)
        rng.shuffle(good)
        rng.shuffle(bad)
        for i in range(max(len(good), len(bad))):
            c, r = good[i % len(good)], bad[i % len(bad)]
            if c.text != r.text:
                out.append((c, r, 1.0))
            if len(out) >= max_per_problem:
                break
        return out
    if among not in AMONG:
        raise ValueError(f"pairs.among must be one of {AMONG}, got {among!r}")
    ranked = [s for s in cands if _has_score(s) and (among == "all" or s.visible_pass)]
    order = sorted(range(len(ranked)), key=lambda i: (-ranked[i].score, i))
    for i in range(len(order) // 2):
        c, r = ranked[order[i]], ranked[order[-1 - i]]
        margin = c.score - r.score
        if margin <= 0 or margin < min_margin:
            break
        if c.text != r.text:
            out.append((c, r, margin))
        if len(out) >= max_per_problem:
            break
    return out


def build_pairs(pools: Mapping[str, Sequence[Sample]], prompts: Mapping[str, str], source: str, *,
                round: int = 0, among: str = "pass", max_per_problem: int = 1, dedup: bool = True,
                min_margin: float = 0.0, seed: int = 0) -> list[PreferencePair]:
    """Pairs of every problem, in pool order. ``prompts[problem_id]`` is the
    exact prompt the candidates answered; a pool without one is an error."""
    pairs = []
    for pid, pool in pools.items():
        if pid not in prompts:
            raise KeyError(f"build_pairs: no prompt for problem {pid!r}")
        rng = random.Random(zlib.crc32(f"{seed}/{round}/{pid}".encode()))
        for c, r, margin in pairs_for_problem(pool, source, among=among, max_per_problem=max_per_problem,
                                              dedup=dedup, min_margin=min_margin, rng=rng):
            pairs.append(PreferencePair(problem_id=pid, prompt=prompts[pid], chosen=c.text, rejected=r.text,
                                        source=source, margin=float(margin), round=round))
    return pairs


def with_judgments(pools: Mapping[str, Sequence[Sample]],
                   judgments: Mapping[str, float | None]) -> dict[str, list[Sample]]:
    """The pools with each candidate's ``score`` replaced by its judgment
    (None when the judge gave none), for source "self_judge"."""
    from dataclasses import replace

    return {pid: [replace(s, score=judgments.get(s.candidate_id)) for s in pool] for pid, pool in pools.items()}


def mix_earlier(current: list[PreferencePair], earlier: Mapping[int, list[PreferencePair]], round: int,
                mix_rounds: int, decay: float) -> list[PreferencePair]:
    """This round's pairs (weight 1) + those of rounds round-1 .. round-mix_rounds,
    each weighted decay**age. A pair with weight 0 is dropped."""
    out = list(current)
    for r in range(round - 1, max(1, round - mix_rounds) - 1, -1):
        w = decay ** (round - r)
        if w <= 0:
            continue
        out += [msgspec.structs.replace(p, weight=p.weight * w) for p in earlier.get(r, [])]
    return out


def split_holdout(pairs: Sequence[PreferencePair], frac: float,
                  seed: int = 0) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """-> (train, heldout). Whole problems go to one side (a hash of the
    problem id), so held-out pairs measure generalisation to new problems.
    Keeps at least one training pair when there is any."""
    if frac <= 0 or len(pairs) < 2:
        return list(pairs), []
    threshold = int(frac * 2**32)
    train, held = [], []
    for p in pairs:
        (held if zlib.crc32(f"{seed}/{p.problem_id}".encode()) < threshold else train).append(p)
    if not train:
        return list(pairs), []
    return train, held


def count_by_source(pairs: Iterable[PreferencePair]) -> dict[str, int]:
    return dict(Counter(p.source for p in pairs))


# ----------------------------------------------------------------------------
# LLM-as-a-judge answers
# ----------------------------------------------------------------------------

_SCORE_PATTERNS = (
    re.compile(r"score\s*(?:is|:|=)?\s*\**\s*([0-5](?:\.\d+)?)\s*(?:/\s*5|out of 5)?", re.I),
    re.compile(r"\b([0-5](?:\.\d+)?)\s*(?:/\s*5|out of 5)\b", re.I),
    re.compile(r"^\s*\**\s*([0-5](?:\.\d+)?)\s*\**\s*$"),
)


def parse_judgment(text: str) -> float | None:
    """A judge's answer -> its 0-5 score, or None when there is no clear one.

    Accepted: "Score: 4", "score = 3.5", "4/5", "4 out of 5", or an answer
    that is only a number. The first pattern that matches wins, in that order;
    a number outside 0-5 or several different scores in the same form is no
    judgment (None), so a rambling answer never counts as a vote."""
    if not text:
        return None
    for pattern in _SCORE_PATTERNS:
        found = {float(x) for x in pattern.findall(text)}
        if len(found) == 1:
            value = found.pop()
            return value if 0.0 <= value <= 5.0 else None
        if len(found) > 1:
            return None
    return None
