import msgspec
import pytest

from constellation.protocol import messages as m


def _sample_problem():
    return m.Problem(id="E1", task="dsl", prompt="a->A\n=>", data={"visible": [["a", "A"]]},
                     reference="upper(x)", difficulty=1)


def test_round_trip_every_kind_of_work_message():
    p = _sample_problem()
    c = m.Candidate(id="eval/0/E1/0", problem_id="E1", text="upper(x)", logprob=-1.5, adapter_version=2)
    msgs = [
        m.GenerateRequest(request_id="r1", problems=[p], k=4, sampling=m.Sampling(), adapter_version=0,
                          candidate_prefix="train/1"),
        m.Candidates(request_id="r1", items=[c]),
        m.VerifyRequest(request_id="r2", problem=p, candidates=[c]),
        m.Verdicts(request_id="r2", items=[m.Verdict(candidate_id=c.id, problem_id="E1", status="pass",
                                                     visible_passed=1, visible_total=1, heldout_correct=True,
                                                     heldout_outputs=["B", None])]),
        m.Ready(role="critic", pid=1, impl="learned"),
        m.Error(request_id="r3", error_kind="role", message="boom"),
    ]
    for msg in msgs:
        assert m.decode(m.encode(msg)) == msg


def test_decode_into_expected_type_rejects_other_kinds():
    frames = m.encode(m.Shutdown(reason="bye"))
    with pytest.raises(m.DecodeError, match="undecodable"):
        m.decode(frames, m.VerifyRequest)


def test_unknown_schema_version_is_rejected_with_clear_error():
    frames = m.encode(m.Shutdown())
    with pytest.raises(m.DecodeError, match="this build speaks cst/1"):
        m.decode([b"cst/99", frames[1]])


@pytest.mark.parametrize("payload", [b"", b"\xc1\xff junk", msgspec.msgpack.encode({"kind": "nope"}),
                                     msgspec.msgpack.encode({"kind": "verify", "request_id": 3})])
def test_malformed_payloads_raise_decode_error(payload):
    with pytest.raises(m.DecodeError):
        m.decode([m.HEADER, payload])


def test_wrong_frame_count_is_rejected():
    with pytest.raises(m.DecodeError, match="expected 2 frames"):
        m.decode([m.HEADER])


def test_preference_messages_round_trip_and_pairs_default_for_old_senders():
    pair = m.PreferencePair(problem_id="P", prompt="x=>", chosen="upper(x)", rejected="x", source="critic",
                            margin=0.4, round=2, weight=0.5)
    msgs = [m.TrainRequest(request_id="t", round=2, examples=[], pairs=[pair]),
            m.JudgeRequest(request_id="j", round=2, items=[m.JudgeItem(candidate_id="c", problem_id="P",
                                                                        prompt="x=>", text="upper(x)")]),
            m.Judgments(request_id="j", candidate_ids=["c", "d"], scores=[-0.5, None], method="likelihood")]
    for msg in msgs:
        assert m.decode(m.encode(msg)) == msg
    old = msgspec.msgpack.encode({"kind": "train", "request_id": "t", "round": 1, "examples": []})
    assert m.decode([m.HEADER, old]).pairs == []
