"""The DSL language, interpreter, verifier and verifier role."""

from __future__ import annotations

import random
import time

import pytest

from constellation.protocol.config import Config
from constellation.protocol.messages import Candidate, Problem, Verdicts, VerifyRequest
from roles.verifier_dsl import DslVerifier
from verifiers.dsl import (
    DSL_TOKENS, MAX_DEPTH, MAX_STRING, MAX_TEXT, SIGNATURES, Call, Const, DslParseError,
    DslRuntimeError, DslTimeout, X_NODE, depth, parse, run, to_text, verify,
)
from constellation.tasks.dsl import sample_program


def ev(text: str, x: str) -> str:
    return run(parse(text), x)


def problem(visible, heldout_inputs, heldout_outputs, pid="P1") -> Problem:
    return Problem(id=pid, task="dsl", prompt="", reference=None,
                   data={"visible": visible, "heldout_inputs": heldout_inputs,
                         "heldout_outputs": heldout_outputs})


def cand(text: str, cid: str = "c/0") -> Candidate:
    return Candidate(id=cid, problem_id="P1", text=text, logprob=0.0, adapter_version=0)


NAMES = problem([["john smith", "J. Smith"], ["mary lee", "M. Lee"]],
                ["ana diaz", "li o'neil"], ["A. Diaz", "L. O'neil"])


# ---------------------------------------------------------------- semantics


@pytest.mark.parametrize("text,x,want", [
    ("x", "Ab c", "Ab c"),
    ('"const"', "ignored", "const"),
    ("upper(x)", "john o'neil", "JOHN O'NEIL"),
    ("lower(x)", "AB-12-Cd", "ab-12-cd"),
    ("title(x)", "john o'neil-smith", "John O'Neil-Smith"),
    ("initials(x)", "john  ronald   smith", "jrs"),
    ("initials(x)", "   ", ""),
    ("take(x,3)", "abcdef", "abc"),
    ("take(x,-2)", "abcdef", "abcd"),
    ("take(x,99)", "abc", "abc"),
    ("drop(x,2)", "abcdef", "cdef"),
    ("drop(x,-2)", "abcdef", "ef"),
    ("drop(x,99)", "abc", ""),
    ('split(x,"@",0)', "jo@acme.com", "jo"),
    ('split(x,".",-1)', "jo@acme.com", "com"),
    ('split(x,", ",1)', "Lee, Ana", "Ana"),
    ('replace(x,"-","")', "555-12-34", "5551234"),
    ('replace(x,"a","bb")', "banana", "bbbnbbnbb"),
    ('strip(x,"0#")', "#00417", "417"),
    ('strip(x,"0")', "1000", "1"),
    ('cat(x,"@",x)', "ab", "ab@ab"),
    ('cat(take(x,1),". ",split(x," ",-1))', "john smith", "j. smith"),
    ('cat(upper(split(x," ",0)),".")', "ana lee", "ANA."),
])
def test_operation_semantics(text, x, want):
    assert ev(text, x) == want


def test_split_index_out_of_range_is_runtime_error():
    with pytest.raises(DslRuntimeError, match="out of range"):
        ev('split(x," ",2)', "two words")


def test_split_negative_index_out_of_range_is_runtime_error():
    with pytest.raises(DslRuntimeError):
        ev('split(x," ",-3)', "two words")


def test_split_empty_separator_is_runtime_error():
    with pytest.raises(DslRuntimeError, match="empty separator"):
        ev('split(x,"",0)', "abc")


def test_step_limit_raises_timeout():
    prog = parse('cat(x,x,x,x)')
    assert run(prog, "ab", step_limit=100) == "abababab"
    with pytest.raises(DslTimeout):
        run(prog, "ab", step_limit=5)


def test_replace_growth_is_timeout_before_allocation():
    # each replace multiplies the length by 10: 4 -> 40 -> 400 -> 4000 > MAX_STRING
    prog = parse('replace(replace(replace(x,"a","aaaaaaaaaa"),"a","aaaaaaaaaa"),"a","aaaaaaaaaa")')
    with pytest.raises(DslTimeout):
        run(prog, "aaaa", step_limit=10**9)


def test_nested_cat_growth_is_timeout():
    text = "x"
    for _ in range(12):
        text = f"cat({text},{text})" if len(text) < 500 else f"cat({text},x)"
    prog = parse(text)
    with pytest.raises(DslTimeout):
        run(prog, "y" * 40, step_limit=10**9)


def test_upper_growth_is_bounded():
    with pytest.raises(DslTimeout):
        run(parse("upper(x)"), "ß" * (MAX_STRING // 2 + 1), step_limit=10**9)


def test_programmatic_deep_tree_raises_typed_error():
    prog = X_NODE
    for _ in range(5000):
        prog = Call("upper", (prog,))
    with pytest.raises((DslRuntimeError, DslTimeout)):
        run(prog, "a", step_limit=10**9)


def test_depth_counts_operations():
    assert depth(parse("x")) == 0
    assert depth(parse("upper(x)")) == 1
    assert depth(parse('cat(take(x,1),". ",split(x," ",-1))')) == 3


# ---------------------------------------------------------------- parse / print


def test_round_trip_over_sampled_programs():
    rng = random.Random(0)
    for d in range(1, 7):
        for _ in range(300):
            prog = sample_program(rng, d)
            assert parse(to_text(prog)) == prog, to_text(prog)


def test_round_trip_escapes():
    prog = Call("replace", (X_NODE, '"', "\\"))
    assert to_text(prog) == 'replace(x,"\\"","\\\\")'
    assert parse(to_text(prog)) == prog


def test_parse_accepts_whitespace_and_prints_canonically():
    assert to_text(parse(' cat( x ,\n". " , take( x , -2 ) ) ')) == 'cat(x,". ",take(x,-2))'


def test_programs_are_hashable_values():
    assert len({parse("upper(x)"), parse("upper( x )"), parse("lower(x)")}) == 2


def test_dsl_tokens_cover_every_operation():
    assert set(DSL_TOKENS) == {f"{name}(" for name in SIGNATURES}
    assert all(tok in to_text(parse('cat(upper(x),lower(x))')) for tok in ("cat(", "upper(", "lower("))


@pytest.mark.parametrize("text", [
    "", "   ", "upper(", "upper(x", "upper(x))", "(x)", ")", '"abc', 'cat(x,"a', "cat(x)",
    "cat(" + ",".join(["x"] * 9) + ")", "take(x,1234)", "take(x,)", "take(x,1.5)", "frob(x)",
    "Upper(x)", "x x", 'split(x,",0)', 'replace(x,"\\n","")', 'cat(x,"\x01")', "\x00\xff\xfe",
    "upper(y)", 'split(x, ",1)',
])
def test_malformed_text_is_parse_error(text):
    with pytest.raises(DslParseError):
        parse(text)


def test_deep_nesting_is_parse_error_not_recursion_error():
    for n in (MAX_DEPTH + 2, 10_000):
        text = "upper(" * n + "x" + ")" * n
        with pytest.raises(DslParseError):
            parse(text)


def test_nesting_at_the_limit_parses():
    text = "upper(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH
    assert depth(parse(text)) == MAX_DEPTH


def test_megabyte_text_is_rejected_fast():
    t0 = time.perf_counter()
    with pytest.raises(DslParseError, match="exceeds"):
        parse("cat(x," * 200_000)
    assert time.perf_counter() - t0 < 0.1


def test_text_at_length_limit_parses():
    text = 'cat(x,"' + "a" * (MAX_TEXT - 9) + '")'
    assert len(text) == MAX_TEXT
    assert parse(text).args[1] == Const("a" * (MAX_TEXT - 9))


# ---------------------------------------------------------------- verify


def test_verify_pass_and_heldout_correct():
    v = verify(NAMES, cand('cat(upper(take(x,1)),". ",title(split(x," ",-1)))'))
    assert (v.status, v.visible_passed, v.visible_total) == ("pass", 2, 2)
    assert v.heldout_outputs == ["A. Diaz", "L. O'Neil"]
    assert v.heldout_correct is False  # title() capitalizes after the apostrophe


def test_verify_pass_with_heldout_correct_true():
    p = problem([["ab", "AB"]], ["cd", "e"], ["CD", "E"])
    v = verify(p, cand("upper(x)"))
    assert v.status == "pass" and v.heldout_correct is True and v.heldout_outputs == ["CD", "E"]


def test_verify_fail_counts_visible_passed_and_is_never_correct():
    # right on the held-out input, wrong on a visible one: not the hidden function, so not correct
    p = problem([["ab", "AB"], ["Cd", "cd"]], ["x"], ["X"])
    v = verify(p, cand("upper(x)"))
    assert (v.status, v.visible_passed, v.heldout_correct, v.heldout_outputs) == ("fail", 1, False, ["X"])


def test_verify_parse_error():
    v = verify(NAMES, cand("cat(upper(x)"))
    assert v.status == "parse_error"
    assert v.heldout_correct is None and v.heldout_outputs is None and v.visible_passed == 0
    assert v.detail


def test_verify_runtime_error_on_visible_input():
    p = problem([["a b", "b"], ["c", "?"]], ["d e", "f"], ["e", "?"])
    v = verify(p, cand('split(x," ",1)'))
    assert v.status == "runtime_error" and v.visible_passed == 1
    assert v.heldout_outputs == ["e", None] and v.heldout_correct is False
    assert "out of range" in v.detail


def test_verify_timeout_on_growth():
    t0 = time.perf_counter()
    v = verify(NAMES, cand('replace(replace(replace(replace(x," ","          "),' +
                           '" ","          ")," ","          ")," ","          ")'))
    assert v.status == "timeout" and v.heldout_outputs == [None, None]
    assert time.perf_counter() - t0 < 0.5


def test_verify_timeout_wins_over_runtime_error():
    p = problem([["a", "?"], ["b c d", "?"]], [], [])
    grow = 'replace(' * 3 + 'x' + ',"b","bbbbbbbbbbbb")' * 3
    v = verify(p, cand(f'cat(split(x," ",1),{grow})'))
    assert v.status == "timeout"  # runtime error on "a", timeout on "b c d"


def test_verify_strips_candidate_whitespace():
    assert verify(NAMES, cand('\n  cat(upper(take(x,1)),". ",title(split(x," ",1)))  \n')).status == "pass"


def test_verify_uses_step_limit():
    p = problem([["abc", "abcabc"]], [], [])
    assert verify(p, cand("cat(x,x)"), step_limit=1000).status == "pass"
    assert verify(p, cand("cat(x,x)"), step_limit=3).status == "timeout"


@pytest.mark.parametrize("text", [
    "", "\x00" * 100, bytes(range(256)).decode("latin-1"), "(" * 100_000, ")" * 5000,
    "upper(" * 50_000 + "x", '"' + "a" * 1_000_000, "cat(x," * 200_000 + "x" + ")" * 200_000,
    "x" * (1 << 20), "\ud800", "import os; os.system('true')", "__import__('os')",
])
def test_hostile_text_gets_typed_verdict_quickly(text):
    t0 = time.perf_counter()
    v = verify(NAMES, cand(text))
    assert v.status == "parse_error" and v.heldout_outputs is None
    assert time.perf_counter() - t0 < 0.5


def test_verify_never_raises_on_mutated_programs():
    rng = random.Random(1)
    alphabet = list('x(),"\\-0123456789 ') + DSL_TOKENS
    statuses = set()
    for _ in range(2000):
        text = to_text(sample_program(rng, rng.randint(1, 4)))
        for _ in range(rng.randint(1, 3)):  # insert / delete / replace one piece
            i = rng.randrange(len(text) + 1)
            op = rng.randrange(3)
            piece = rng.choice(alphabet)
            text = (text[:i] + piece + text[i:] if op == 0 else
                    text[:i] + text[i + 1:] if op == 1 else text[:i] + piece + text[i + 1:])
        v = verify(NAMES, cand(text))
        statuses.add(v.status)
        assert v.visible_total == 2
        assert (v.heldout_outputs is None) == (v.status == "parse_error")
    assert {"parse_error", "fail"} <= statuses


def test_verify_throughput_is_thousands_per_second():
    rng = random.Random(2)
    p = problem([["john smith", "J. Smith"], ["mary lee", "M. Lee"], ["ana diaz", "A. Diaz"]],
                ["li chen", "tom jones", "zoe kim", "raj patel", "kate ito", "ben brown"],
                ["L. Chen"] * 6)
    texts = [to_text(sample_program(rng, rng.randint(1, 3))) + " " * i for i in range(1000)]
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        verify(p, cand(t, f"c/{i}"))
    per_second = len(texts) / (time.perf_counter() - t0)
    assert per_second > 1000, per_second


# ---------------------------------------------------------------- role


def test_role_handle_returns_one_verdict_per_candidate():
    role = DslVerifier(Config(), run_dir=".")
    assert role.setup()["step_limit"] == Config().verifier.step_limit
    req = VerifyRequest(request_id="r7", problem=NAMES, candidates=[
        cand('cat(upper(take(x,1)),". ",title(split(x," ",1)))', "c/0"),
        cand("upper(", "c/1"),
        cand("upper(x)", "c/2")])
    reply = role.handle(req)
    assert isinstance(reply, Verdicts) and reply.request_id == "r7"
    assert [v.candidate_id for v in reply.items] == ["c/0", "c/1", "c/2"]
    assert [v.status for v in reply.items] == ["pass", "parse_error", "fail"]
    assert reply.seconds > 0
    stats = role.stats()
    assert stats["done"] == 3 and stats["per_second"] > 0 and stats["status_pass"] == 1


def test_role_uses_configured_step_limit():
    cfg = Config()
    cfg.verifier.step_limit = 3
    role = DslVerifier(cfg, run_dir=".")
    p = problem([["abc", "abcabc"]], [], [])
    reply = role.handle(VerifyRequest(request_id="r", problem=p, candidates=[cand("cat(x,x)")]))
    assert reply.items[0].status == "timeout"


def test_role_rejects_other_task_families():
    role = DslVerifier(Config(), run_dir=".")
    other = Problem(id="P", task="arith", prompt="", data={})
    with pytest.raises(ValueError, match="arith"):
        role.handle(VerifyRequest(request_id="r", problem=other, candidates=[]))


def test_constants_in_cat_are_values():
    assert parse('cat("a",x)') == Call("cat", (Const("a"), X_NODE))
