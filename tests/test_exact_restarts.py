"""Exact restarts: re-sends are not attempts, replies only from the role asked,
critic training once per round, zero-step training a clear result, a finished
run left as it is."""

import threading

import pytest

from constellation.protocol import config as config_mod
from constellation.protocol import events as ev
from constellation.protocol import messages as m
from constellation.runtime.requests import MAX_ATTEMPTS, CoordinatorError, RequestLoop
from constellation.runtime.store import RunStore, finished_run


class RecordingClient:
    roles = ("trainer", "verifier")

    def __init__(self):
        self.sent = []

    def send(self, role, msg):
        self.sent.append((role, msg))

    def recv(self, timeout):
        return None

    def close(self):
        pass


def loop_with_pending(role="trainer"):
    loop = RequestLoop(RecordingClient(), threading.Event(), request_timeout=60)
    loop._handlers[m.AdapterReady] = loop._on_reply
    loop._handlers[m.Verdicts] = loop._on_reply
    req = m.TrainRequest(request_id=loop._rid("train"), round=1, examples=[])
    loop._on_ready(role, m.Ready(role=role, pid=1, impl="x"))
    loop._submit(role, req)
    return loop, req


def test_resends_after_restarts_are_not_attempts():
    loop, req = loop_with_pending()
    for pid in range(2, 2 + 2 * MAX_ATTEMPTS):  # many restarts, each re-sending the request
        loop._on_ready("trainer", m.Ready(role="trainer", pid=pid, impl="x"))
    assert sum(r is req for _, r in loop.client.sent) == 1 + 2 * MAX_ATTEMPTS
    error = m.Error(request_id=req.request_id, error_kind="role", message="boom")
    for _ in range(MAX_ATTEMPTS - 1):
        loop._dispatch("trainer", error)  # re-sent, still within the limit
    with pytest.raises(CoordinatorError):
        loop._dispatch("trainer", error)


def test_a_reply_from_another_role_is_refused_and_the_request_stays_pending():
    loop, req = loop_with_pending()
    forged = m.AdapterReady(request_id=req.request_id, version=1, path="/forged")
    loop._dispatch("verifier", forged)
    assert req.request_id in loop.pending and req.request_id not in loop._replies
    assert loop.counters["refused_replies"] == 1
    loop._dispatch("trainer", m.AdapterReady(request_id=req.request_id, version=1, path="/honest"))
    assert loop._replies[req.request_id].path == "/honest"


def test_a_ready_for_another_role_is_refused():
    loop, _ = loop_with_pending()
    loop._dispatch("verifier", m.Ready(role="trainer", pid=99, impl="x"))
    assert loop.pids["trainer"] == 1 and loop.counters["refused_replies"] == 1


def test_zero_step_training_is_a_clear_result():
    torch = pytest.importorskip("torch")
    from constellation.models.fit import FitArgs, fit

    net = torch.nn.Linear(2, 1)
    result = fit(net, lambda _epoch: iter(()), lambda b: net(b).sum(), FitArgs(lr=1e-3, epochs=1, schedule="constant"))
    assert result.steps == 0 and result.loss_summary() == {}


def test_critic_trains_once_per_round_whatever_the_request_id(tmp_path):
    pytest.importorskip("torch")
    from roles.critic_small import SmallCritic

    cfg = config_mod.from_dict({"critic": {"hidden_size": 16, "layers": 1, "heads": 2, "max_len": 64,
                                           "batch_size": 8, "steps": 3}, "run": {"seed": 0}})
    items = [m.LabeledItem(candidate_id=f"train/1/p{i}/0", problem_id=f"p{i}", text=f"x{i}", label=i % 2 == 0)
             for i in range(12)]
    critic = SmallCritic(cfg, tmp_path)
    critic.setup()
    first = critic.handle(m.CriticTrainRequest(request_id="a-1", round=1, labels=items))
    # a restarted coordinator asks again under a new id, with the labels in another order
    again = critic.handle(m.CriticTrainRequest(request_id="b-7", round=1, labels=items[::-1]))
    assert again.request_id == "b-7" and (again.version, again.metrics) == (first.version, first.metrics)
    assert critic.version == 1
    restarted = SmallCritic(cfg, tmp_path)
    restarted.setup()
    after = restarted.handle(m.CriticTrainRequest(request_id="c-2", round=1, labels=items))
    assert (after.version, after.metrics) == (first.version, first.metrics)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    from launch.up import up

    cfg = config_mod.load("tiny", [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config_mod.to_toml(cfg))
    store = RunStore(run_dir)
    store.event(ev.RunStart(run_dir=str(run_dir), rounds=1, seed=0, resumed=False))
    store.event(ev.RunEnd(ok=True))
    store.close()
    before = (run_dir / "metrics.jsonl").read_bytes()
    assert finished_run(run_dir).ok
    code, same = up("tiny", [], run_dir=run_dir)
    assert code == 0 and same == run_dir.resolve()
    assert (run_dir / "metrics.jsonl").read_bytes() == before
    assert not (run_dir / "keys").exists()  # nothing was started
