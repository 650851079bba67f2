"""DSL problem sampling, splits, prompt and critic text."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from constellation.protocol.config import TaskConfig
from constellation.protocol.messages import Candidate, Split
from verifiers.dsl import depth, parse, run, to_text, verify
from constellation.tasks.dsl import (
    ERROR, MAX_IO_CHARS, _rewrites, _simpler_local, critic_text, format_prompt,
    make_problem, make_split, sample_program,
)

SMALL = TaskConfig(n_labeled=60, labeled_max_depth=2, n_train=30, n_eval=15, depths=[1, 2, 3],
                   n_visible=3, n_heldout=6)


@pytest.fixture(scope="module")
def problems():
    rng = random.Random(0)
    out = [make_problem(rng, f"P{i}", 1 + i % 4, 3, 6) for i in range(120)]
    assert all(p is not None for p in out)
    return out


@pytest.fixture(scope="module")
def split():
    return make_split(SMALL, seed=5)


def test_sample_program_has_exact_depth():
    rng = random.Random(1)
    for d in range(1, 6):
        for _ in range(100):
            assert depth(sample_program(rng, d)) == d


def test_sample_program_is_deterministic():
    a = [to_text(sample_program(random.Random(3), d)) for d in (1, 2, 3)]
    b = [to_text(sample_program(random.Random(3), d)) for d in (1, 2, 3)]
    assert a == b


def test_sample_program_rejects_depth_zero():
    with pytest.raises(ValueError):
        sample_program(random.Random(0), 0)


def test_problem_fields(problems):
    for p in problems:
        assert p.task == "dsl"
        assert p.prompt == format_prompt(p.data["visible"])
        assert depth(parse(p.reference)) == p.difficulty
        assert len(p.data["visible"]) == 3
        assert len(p.data["heldout_inputs"]) == len(p.data["heldout_outputs"]) == 6


def test_reference_reproduces_every_output(problems):
    for p in problems:
        prog = parse(p.reference)
        assert all(run(prog, i) == o for i, o in p.data["visible"])
        assert [run(prog, i) for i in p.data["heldout_inputs"]] == p.data["heldout_outputs"]


def test_reference_verifies_as_pass_and_heldout_correct(problems):
    for p in problems:
        c = Candidate(id="c", problem_id=p.id, text=p.reference, logprob=0.0, adapter_version=0)
        v = verify(p, c)
        assert v.status == "pass" and v.heldout_correct is True, (p.reference, v)


def test_problems_are_non_trivial(problems):
    for p in problems:
        ins = [i for i, _ in p.data["visible"]] + p.data["heldout_inputs"]
        outs = [o for _, o in p.data["visible"]] + p.data["heldout_outputs"]
        assert len(set(outs)) > 1, p.reference  # not constant
        assert outs != ins, p.reference  # not the identity
        assert len({o for _, o in p.data["visible"]}) == 3  # visible outputs distinct
        assert len(set(ins)) == len(ins)  # no repeated input


def test_inputs_and_outputs_are_short_and_single_line(problems):
    for p in problems:
        strings = [s for pair in p.data["visible"] for s in pair] + p.data["heldout_inputs"] + p.data["heldout_outputs"]
        assert all(0 < len(s) <= MAX_IO_CHARS and "\n" not in s for s in strings), p.data


def test_visible_examples_rule_out_a_program_with_one_op_fewer(problems):
    for p in problems:
        prog = parse(p.reference)
        for simpler in _rewrites(prog, _simpler_local):
            outs = []
            for i, _ in p.data["visible"]:
                try:
                    outs.append(run(simpler, i))
                except Exception:
                    outs.append(None)
            assert outs != [o for _, o in p.data["visible"]], (p.reference, to_text(simpler))


def test_make_problem_is_deterministic():
    a = make_problem(random.Random(9), "P", 3, 3, 6)
    b = make_problem(random.Random(9), "P", 3, 3, 6)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)


def test_prompt_format_is_exact():
    assert format_prompt([["john smith", "J. Smith"], ["mary lee", "M. Lee"]]) == \
        "john smith -> J. Smith\nmary lee -> M. Lee\n=>"


def test_prompt_fits_the_model_context(problems):
    # character-level tokens: prompt + reference must leave room under max_len 256
    assert max(len(p.prompt) + len(p.reference) for p in problems) <= 200


def test_critic_text_shows_candidate_outputs_and_error_marker(problems):
    p = problems[0]
    outs = ["OUT-A", None] + ["o"] * (len(p.data["heldout_inputs"]) - 2)
    text = critic_text(p, "  upper(x) \n", outs)
    assert text.startswith(p.prompt + "upper(x)\n")
    lines = text.split("\n")[len(p.data["visible"]) + 1:]
    assert lines[0] == f"{p.data['heldout_inputs'][0]} ~> OUT-A"
    assert lines[1] == f"{p.data['heldout_inputs'][1]} ~> {ERROR}"
    assert len(lines) == len(p.data["heldout_inputs"])


def test_critic_text_never_leaks_true_heldout_outputs():
    from constellation.protocol.messages import Problem
    p = Problem(id="P", task="dsl", prompt="", data={
        "visible": [["ab", "AB"]], "heldout_inputs": ["cd"], "heldout_outputs": ["SECRET"]})
    assert "SECRET" not in critic_text(p, "upper(x)", ["CD"])


def test_critic_text_for_unparsed_candidate_and_long_text(problems):
    text = critic_text(problems[0], "cat(" * 10_000, None)
    assert text.endswith("~> !parse") and len(text) < 400


def test_make_split_is_deterministic():
    a, b = make_split(SMALL, seed=5), make_split(SMALL, seed=5)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)


def test_make_split_depends_on_seed(split):
    other = make_split(SMALL, seed=6)
    assert [p.reference for p in other.eval] != [p.reference for p in split.eval]


def test_make_split_sizes_and_ids(split):
    assert isinstance(split, Split)
    assert [len(split.labeled), len(split.train), len(split.eval)] == [60, 30, 15]
    assert split.labeled[0].id == "L0001" and split.train[0].id == "T0001" and split.eval[-1].id == "E0015"
    ids = [p.id for p in split.labeled + split.train + split.eval]
    assert len(ids) == len(set(ids))


def test_eval_programs_are_disjoint_from_labeled_and_train(split):
    eval_programs = [p.reference for p in split.eval]
    assert len(set(eval_programs)) == len(eval_programs)
    others = {p.reference for p in split.labeled + split.train}
    assert not others & set(eval_programs)


def test_labeled_holds_only_easy_problems(split):
    assert {p.difficulty for p in split.labeled} == {1, 2}


def test_train_and_eval_are_spread_evenly_over_depths(split):
    for problems in (split.train, split.eval):
        counts = Counter(p.difficulty for p in problems)
        assert set(counts) == {1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1


def test_deeper_programs_are_longer(split):
    lengths = {d: [len(p.reference) for p in split.train if p.difficulty == d] for d in (1, 2, 3)}
    means = [sum(v) / len(v) for v in lengths.values()]
    assert means[0] < means[1] < means[2], means


@pytest.mark.slow
def test_default_size_split_is_disjoint():
    cfg = TaskConfig()
    s = make_split(cfg, seed=0)
    eval_programs = {p.reference for p in s.eval}
    assert len(eval_programs) == cfg.n_eval
    assert not eval_programs & {p.reference for p in s.labeled + s.train}
    assert len(s.labeled) == cfg.n_labeled and len(s.train) == cfg.n_train

