"""The network model's rounds rule (network.py) and the WAN relay it was validated with
(experiments/wan_relay.py)."""

import os
import sys

import pytest

from secfwt_jax.backend import NetworkSetting, estimate_time, sum_costs
from secfwt_jax.backend.cost import OP_CLASSES, CallCost, OpClassCost
from secfwt_jax.backend.network import rounds_of

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))


def _cost(actions, rounds=None, sent=None, wall=1.0):
    n = len(actions)
    sent = sent or [1000] * n
    return CallCost(
        protocol="aby3", field="FM64", fraction_bits=18, mode="mp", n_parties=n, wall_s=wall,
        exec_s=[wall] * n, bytes_sent=list(sent), bytes_recv=list(sent),
        send_actions=list(actions), recv_actions=list(actions),
        by_op_class={c: OpClassCost() for c in OP_CLASSES}, ops={}, rounds=rounds,
    )


def test_counted_rounds_replace_send_actions_in_the_latency_term():
    net = NetworkSetting("x", bandwidth_bps=8e9, latency_s=0.01)
    assert estimate_time(_cost([40, 50, 45]), net).rounds == 50
    est = estimate_time(_cost([40, 50, 45], rounds=70), net)
    assert est.rounds == 70 and est.latency_s == pytest.approx(0.7)
    assert est.total_s == pytest.approx(1.0 + 0.7 + 8 * 1000 / 8e9)


def test_counted_rounds_are_recorded_and_summed_only_when_every_call_has_them():
    d = _cost([3, 4], rounds=5).to_dict()
    assert d["measured"]["rounds"] == 5 and d["modelled"]["rounds"] == 5
    assert "rounds" not in _cost([3, 4]).to_dict()["measured"]
    assert sum_costs([_cost([3, 4], rounds=5), _cost([1, 1], rounds=2)]).rounds == 7
    assert sum_costs([_cost([3, 4], rounds=5), _cost([1, 1])]).rounds is None


def test_negative_counted_rounds_are_refused():
    with pytest.raises(ValueError, match="rounds"):
        rounds_of(_cost([1], rounds=-1))


def _echo_through_relay(n_bytes: int, latency_s: float, bw: float) -> dict:
    """Echo through experiments/wan_relay.py's relay (the relay's self-test): what came back,
    one byte's round trip, and the time of a bulk transfer against its lower bound."""
    import socket
    import threading
    import time

    from wan_relay import Relay, Shape, free_port

    payload = os.urandom(n_bytes)
    echo_port, relay_port = free_port(), free_port()
    srv = socket.create_server(("127.0.0.1", echo_port))

    def echo():
        conn, _ = srv.accept()
        with conn:
            got = 0
            while got < n_bytes + 1:
                b = conn.recv(1 << 16)
                if not b:
                    break
                got += len(b)
                conn.sendall(b)

    threading.Thread(target=echo, daemon=True).start()
    relay = Relay([(relay_port, echo_port, 0, 1)], 2)
    relay.set_shape(Shape("test", latency_s, bw))
    try:
        with socket.create_connection(("127.0.0.1", relay_port), timeout=60) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = time.perf_counter()
            c.sendall(b"x")
            first = c.recv(1)
            rtt = time.perf_counter() - t
            t = time.perf_counter()
            threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
            back = bytearray()
            while len(back) < n_bytes:
                back += c.recv(1 << 20)
            bulk = time.perf_counter() - t
    finally:
        relay.close()
        srv.close()
    return {"echo_ok": first == b"x" and bytes(back) == payload, "rtt_s": rtt,
            "bulk_s": bulk, "bulk_min_s": 8 * n_bytes / bw + 2 * latency_s}


def test_relay_copies_bytes_exactly_and_adds_latency_and_bandwidth():
    r = _echo_through_relay(n_bytes=1 << 20, latency_s=0.02, bw=100e6)
    assert r["echo_ok"]
    assert r["rtt_s"] >= 0.04  # one byte there and back: two one-way latencies
    assert r["bulk_s"] >= 0.95 * r["bulk_min_s"]  # 1 MiB at 100 Mbps each way: >= 84 ms
