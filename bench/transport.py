"""Round-trip latency and throughput of the transport, ipc:// against tcp://127.0.0.1.

    python bench/transport.py [--n 2000] [--candidates 64]

A "router" hub sends VerifyRequest-sized messages (one problem, N candidates)
to a "dealer" echo peer in another process, which answers with a Verdicts
message of the same size, one request in flight at a time. It prints the
median round-trip per endpoint kind and their ratio, measured side by side in
one run, alternating kinds in blocks so drift hits both alike.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time

from constellation.protocol import messages as m
from constellation.protocol.transport import Link, free_tcp_endpoint, ipc_endpoint


def _echo(endpoint: str, n: int) -> None:
    link = Link("dealer", endpoint, bind=False, identity="echo")
    link.send(m.Ready(role="echo", pid=0, impl="bench"))
    for _ in range(n):
        req = link.recv(timeout=30).msg
        link.send(m.Verdicts(request_id=req.request_id, items=[
            m.Verdict(candidate_id=c.id, problem_id=c.problem_id, status="pass", visible_passed=3,
                      visible_total=3, heldout_correct=True, heldout_outputs=["abc"] * 6) for c in req.candidates]))
    time.sleep(0.5)
    link.close()


def _request(n_cand: int, i: int) -> m.VerifyRequest:
    p = m.Problem(id="E1", task="dsl", prompt="john smith -> J. Smith\n" * 3 + "=>",
                  data={"visible": [["john smith", "J. Smith"]] * 3, "heldout_inputs": ["ada lovelace"] * 6,
                        "heldout_outputs": ["A. Lovelace"] * 6})
    cands = [m.Candidate(id=f"eval/0/E1/{j}", problem_id="E1", text='cat(take(x,1),". ",split(x," ",-1))',
                         logprob=-3.2, adapter_version=1) for j in range(n_cand)]
    return m.VerifyRequest(request_id=f"r{i}", problem=p, candidates=cands)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="round trips per endpoint kind")
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=4)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    kinds = {"ipc": lambda: ipc_endpoint(tmp, f"bench-{time.monotonic_ns()}"), "tcp": free_tcp_endpoint}
    per_block = args.n // args.blocks
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.blocks):
        for kind, make in kinds.items():
            ep = make()
            hub = Link("router", ep, bind=True)
            peer = mp.Process(target=_echo, args=(ep, per_block))
            peer.start()
            assert isinstance(hub.recv(timeout=30).msg, m.Ready)
            reqs = [_request(args.candidates, i) for i in range(per_block)]
            for req in reqs:
                t0 = time.perf_counter()
                hub.send(req, peer="echo")
                env = hub.recv(timeout=30)
                times[kind].append(time.perf_counter() - t0)
                assert env.msg.request_id == req.request_id
            peer.join()
            hub.close()
    size = len(m.encode(_request(args.candidates, 0))[1])
    print(f"request payload: {size} bytes ({args.candidates} candidates); {args.n} round trips per kind")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k}: median round trip {v * 1e3:.3f} ms, {1 / v:.0f} requests/s ({1 / v * args.candidates:.0f} candidates/s)")
    print(f"ratio ipc/tcp median round trip: {med['ipc'] / med['tcp']:.2f}")


if __name__ == "__main__":
    main()
