"""The metrics events: every kind round-trips, anything else is rejected, and
metrics.jsonl stays plain JSON objects that jq reads."""

import json

import pytest

from constellation.protocol import events as ev
from constellation.runtime.store import RunStore, read_event_lines, read_events

# one event of every kind, with every optional field set away from its default
EXAMPLES = [
    ev.RunStart(run_dir="/runs/x", rounds=3, seed=7, resumed=True),
    ev.RunEnd(ok=False, counters={"resent": 2, "ignored": 1}),
    ev.RoleRestart(round=2, role="verifier", pid=4242, resent=5),
    ev.Progress(round=1, phase="train", done=10, total=64, candidates=12, scored=9, pending=3, queued=4),
    ev.Eval(round=1, model="round-1", adapter_version=1, n_problems=40, n_samples=16,
            pass_at_k={"1": 0.25, "16": 0.5}, selection_k=8,
            selection_accuracy={"best_of_k": 0.4, "critic": None}, n_agree=30,
            selection={"8": {"all": {"critic": 0.5}}}, critic_version=2),
    ev.Zpd(round=0, pass_at_1=0.31, low=0.1, high=0.6, verdict="in ZPD at 31%"),
    ev.Crossover(round=1, k_star=None),
    ev.Rationalize(enabled=False, reason="code has no answer to hint"),
    ev.Pairs(round=1, source="self_judge", n_pairs=12, n_earlier=3, n_problems=40, n_problems_with_pairs=9,
             by_source={"verifier": 10, "judge": 2}, judge_method="logprob", n_judge_items=20, n_judged=18),
    ev.Trainer(round=1, version=1, path="adapters/v1", n_examples=30, n_pairs=0,
               metrics={"loss_first": 1.5, "loss_last": 0.75, "steps": 60.0}),
    ev.Critic(round=1, version=1, metrics={"auroc": 0.8, "ece": None}),
    ev.RoundEnd(round=1, n_problems=40, n_candidates=640, n_visible_pass=200, n_selected=30, n_train_examples=30,
                n_rationalize_attempts=5, n_rationalized=2, train_precision=0.9, adapter_load_seconds=1.5,
                seconds=40.0),
    ev.Guard(round=2, val_pass_at_1=0.4, diversity=0.5, critic_mean=None, n_problems=20, n_samples=4, stop=True,
             reason="val pass@1 fell twice", falls=2, diversity_ratio=0.8, best_round=1),
    ev.EarlyStop(round=2, reason="val pass@1 fell twice", best_round=1, rounds_skipped=1),
]


def test_examples_cover_every_kind():
    assert sorted(ev.kind_of(e) for e in EXAMPLES) == sorted(ev.KINDS)


@pytest.mark.parametrize("event", EXAMPLES, ids=ev.kind_of)
def test_every_kind_round_trips(event):
    event = ev.stamp(event)
    decoded = ev.decode_event(ev.encode_event(event))
    assert type(decoded) is type(event) and decoded == event


def test_unknown_kind_is_a_bad_event():
    with pytest.raises(ev.BadEvent):
        ev.decode_event(b'{"event": "no_such_kind", "time": 1.0, "round": 1}')


@pytest.mark.parametrize("line", [b'{"event": "crossover", "round": 1, "k_star": "sixteen"}',  # wrong type
                                  b'{"event": "eval", "round": 1, "model": "base"}',  # fields missing
                                  b'{"round": 1, "k_star": 4}',  # no kind
                                  b'[1, 2]', b'not json', b''])
def test_malformed_lines_are_bad_events(line):
    with pytest.raises(ev.BadEvent):
        ev.decode_event(line)


def test_fields_a_newer_writer_adds_are_ignored():
    e = ev.decode_event(b'{"event": "crossover", "time": 1.0, "round": 2, "k_star": 8, "added_later": [1]}')
    assert e == ev.Crossover(time=1.0, round=2, k_star=8)


def test_metrics_jsonl_lines_are_plain_json_objects(tmp_path):
    store = RunStore(tmp_path)
    written = [store.event(e) for e in EXAMPLES]
    store.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(EXAMPLES)
    for line, event in zip(lines, written):
        obj = json.loads(line)  # what jq sees
        assert isinstance(obj, dict) and {"event", "time", "round"} <= set(obj)
        assert obj["event"] == ev.kind_of(event) and obj["round"] == event.round and obj["time"] > 0
    assert read_events(tmp_path) == written


def test_role_metrics_are_nested_under_metrics(tmp_path):
    store = RunStore(tmp_path)
    store.event(EXAMPLES[[ev.kind_of(e) for e in EXAMPLES].index("trainer")])
    store.close()
    obj = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert obj["metrics"]["loss_last"] == 0.75 and "loss_last" not in obj


def test_store_replays_the_last_event_of_a_kind_and_round(tmp_path):
    store = RunStore(tmp_path)
    for reason in ("first", "second"):
        store.event(ev.Guard(round=1, val_pass_at_1=0.4, diversity=0.5, critic_mean=0.6, n_problems=20,
                             n_samples=4, stop=False, reason=reason, falls=0, diversity_ratio=None, best_round=1))
    last = store.last_event(ev.Guard, 1)
    assert isinstance(last, ev.Guard) and last.reason == "second"
    assert store.last_event(ev.Guard, 2) is None and store.last_event(ev.EarlyStop, 1) is None
    store.close()


def test_read_event_lines_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(ev.encode_event(EXAMPLES[0]) + b"\n" + ev.encode_event(EXAMPLES[1]))
    events, bad = read_event_lines(path)
    assert events == EXAMPLES[:2] and bad == 0


def test_a_count_written_as_a_float_by_an_earlier_version_still_reads():
    line = b'{"event": "trainer", "time": 1.0, "round": 1, "version": 1, "path": "p", "n_examples": 342.0, "n_pairs": 0}'
    event = ev.decode_event(line)
    assert isinstance(event, ev.Trainer) and event.n_examples == 342
