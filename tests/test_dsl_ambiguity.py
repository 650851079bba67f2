"""How the DSL task chooses its visible examples (task.visible_mode) and how much
each mode leaves the hidden function open, measured on the task itself: another
program of the same depth fits the visible examples and differs on held-out
inputs. No model is involved."""

from __future__ import annotations

import hashlib
import json
import random

import msgspec
import pytest

from constellation.models.base_model import base_model_key
from constellation.protocol import config
from constellation.protocol.config import ModelConfig, TaskConfig
from constellation.protocol.messages import Candidate, Problem
from constellation.tasks.dsl import (
    VISIBLE_MODES, _rewrites, _simpler_local, make_problem, make_split, open_alternative, tokenizer_tokens,
)
from constellation.tasks.dsl_inputs import FORMATS
from verifiers.dsl import depth, parse, run, verify

SMALL = TaskConfig(n_labeled=60, labeled_max_depth=2, n_train=30, n_eval=15, depths=[1, 2, 3],
                   n_visible=3, n_heldout=6)


def _problems(mode: str, n: int, n_visible: int = 3, tag: str = "amb") -> list[Problem]:
    """One problem per seed "tag/i", so two modes start from the same program and inputs
    (discriminating and random draw identically until they choose the visible inputs)."""
    out = [make_problem(random.Random(f"{tag}/{i}"), f"P{i}", 1 + i % 3, n_visible, 6, mode) for i in range(n)]
    assert all(p is not None for p in out)
    return out


def _ambiguous(problems: list[Problem]) -> int:
    return sum(open_alternative(p) is not None for p in problems)


@pytest.fixture(scope="module")
def by_mode() -> dict[str, list[Problem]]:
    return {mode: _problems(mode, 240) for mode in VISIBLE_MODES}


@pytest.mark.parametrize("mode", VISIBLE_MODES)
def test_every_mode_makes_valid_problems(by_mode, mode):
    for p in by_mode[mode][:60]:
        program = parse(p.reference)
        assert depth(program) == p.difficulty
        for inp, out in p.data["visible"]:
            assert run(program, inp) == out
        assert [run(program, x) for x in p.data["heldout_inputs"]] == p.data["heldout_outputs"]
        v = verify(p, Candidate(id="c", problem_id=p.id, text=p.reference, logprob=0.0, adapter_version=0))
        assert (v.status, v.heldout_correct) == ("pass", True)
        shown = [o for _, o in p.data["visible"]]
        assert len(set(shown)) == len(shown) == 3
        inputs = [i for i, _ in p.data["visible"]]
        for shallower in _rewrites(program, _simpler_local):  # still ruled out in every mode
            assert [_run_or_none(shallower, x) for x in inputs] != shown


def _run_or_none(program, x):
    try:
        return run(program, x)
    except Exception:
        return None


def test_narrow_and_random_leave_more_problems_ambiguous_than_discriminating(by_mode):
    counts = {mode: _ambiguous(problems) for mode, problems in by_mode.items()}
    assert counts["narrow"] >= 2 * counts["discriminating"] + 20, counts
    assert counts["random"] > counts["discriminating"], counts


def test_fewer_visible_examples_leave_more_problems_ambiguous():
    one, three = _problems("random", 120, n_visible=1, tag="nv"), _problems("random", 120, n_visible=3, tag="nv")
    assert _ambiguous(one) > _ambiguous(three) + 10


def test_narrow_visible_inputs_come_from_a_simpler_distribution(by_mode):
    """Narrow inputs have equal-length words or fewer parts: their lengths vary less."""
    def equal_length_share(problems, key):
        return sum(len({len(x) for x in key(p)}) == 1 for p in problems) / len(problems)

    shown = equal_length_share(by_mode["narrow"], lambda p: [i for i, _ in p.data["visible"]])
    held = equal_length_share(by_mode["narrow"], lambda p: p.data["heldout_inputs"][:3])
    assert shown > held + 0.2, (shown, held)
    assert shown > equal_length_share(by_mode["random"], lambda p: [i for i, _ in p.data["visible"]]) + 0.2


def test_narrow_generators_draw_strings_their_separators_describe():
    rng = random.Random(3)
    for fmt in FORMATS:
        for _ in range(20):
            x = fmt.narrow(rng)
            assert all(s in x for s in fmt.seps if len(s) == 1 and s != ","), (fmt.name, x)


def test_open_alternative_fits_the_visible_examples_and_differs_on_heldout(by_mode):
    found = 0
    for p in by_mode["narrow"][:80]:
        alt = open_alternative(p)
        if alt is None:
            continue
        found += 1
        program = parse(alt)
        assert depth(program) == p.difficulty
        assert [_run_or_none(program, i) for i, _ in p.data["visible"]] == [o for _, o in p.data["visible"]]
        assert [_run_or_none(program, x) for x in p.data["heldout_inputs"]] != p.data["heldout_outputs"]
    assert found >= 10


def _hand_problem(visible: list[list[str]], heldout: list[str]) -> Problem:
    program = parse('split(x," ",0)')
    return Problem(id="H", task="dsl", prompt="", reference='split(x," ",0)', difficulty=1,
                   data={"visible": visible, "heldout_inputs": heldout,
                         "heldout_outputs": [run(program, x) for x in heldout]})


def test_open_alternative_finds_a_position_for_a_separator_only_when_lengths_coincide():
    same_length = _hand_problem([["john smith", "john"], ["mary lee", "mary"], ["omar khan", "omar"]],
                                ["li chen", "peter kim"])
    assert open_alternative(same_length) is not None  # take(x,4) fits, and differs on "li chen"
    mixed = _hand_problem([["john smith", "john"], ["li lee", "li"], ["peter khan", "peter"]],
                          ["ana chen", "carlos kim"])
    assert open_alternative(mixed) is None


def test_make_problem_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="visible mode"):
        make_problem(random.Random(0), "P", 2, 3, 6, "sideways")


def test_config_rejects_an_unknown_mode():
    with pytest.raises(config.ConfigError):
        config.load("tiny", ['task.visible_mode="sideways"'])


def test_the_default_mode_draws_as_before_so_cached_bases_stay_valid():
    """Golden values computed on main before visible modes existed: the split and the
    base model's cache key of the default mode must not change."""
    split = make_split(SMALL, seed=5)
    digest = hashlib.sha256(json.dumps([[p.id, p.prompt, p.reference, p.data]
                                        for p in split.labeled + split.train + split.eval]).encode())
    assert digest.hexdigest()[:16] == "97ff96dbeecc792a"
    assert base_model_key(ModelConfig(), SMALL, 5, split.labeled, tokenizer_tokens()) == "612d67f0283042f6"


def test_the_mode_applies_to_the_labeled_set_and_the_cache_key():
    narrow_cfg = msgspec.structs.replace(SMALL, visible_mode="narrow")
    default, narrow = make_split(SMALL, seed=5), make_split(narrow_cfg, seed=5)
    assert [p.prompt for p in default.labeled] != [p.prompt for p in narrow.labeled]
    assert (base_model_key(ModelConfig(), SMALL, 5, default.labeled, [])
            != base_model_key(ModelConfig(), narrow_cfg, 5, default.labeled, []))
