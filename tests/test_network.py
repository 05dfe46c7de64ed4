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


def test_relay_copies_bytes_exactly_and_adds_latency_and_bandwidth():
    from wan_relay import self_test

    r = self_test(n_bytes=1 << 20, latency_s=0.02, bw=100e6)
    assert r["echo_ok"]
    assert r["rtt_s"] >= 0.04  # one byte there and back: two one-way latencies
    assert r["bulk_s"] >= 0.95 * r["bulk_min_s"]  # 1 MiB at 100 Mbps each way: >= 84 ms
