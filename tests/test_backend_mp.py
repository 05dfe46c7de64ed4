"""The SPU backend in mp mode: one OS process per party over brpc links on loopback; faults."""

import multiprocessing
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

pytest.importorskip("spu")

from secfwt_jax.backend import BackendError, make_backend  # noqa: E402

TFP = "trusted_first_party"  # semi2k's only dealer in spu 0.9.5 (insecure against party 0)
pytestmark = pytest.mark.filterwarnings("ignore::secfwt_jax.backend.InsecureDealerWarning")

TIMEOUT_S = 8.0


def small_fn(p, x):
    return jax.nn.softmax(x @ p["w"] + p["b"], axis=-1)


def slow_fn(x):
    """About 40 sequential softmaxes: several seconds under semi2k, long enough to be killed
    in the middle of."""
    for _ in range(40):
        x = 3.0 * jax.nn.softmax(x, axis=-1)
    return x


@pytest.fixture
def small_params():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((8, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_no_party_left(pids):
    assert multiprocessing.active_children() == []
    assert not [p for p in pids if _alive(p)]


@pytest.mark.slow
def test_mp_mode_matches_plaintext_and_sim_bytes(small_params):
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    with make_backend("semi2k", mode="sim", dealer=TFP) as sim:
        _, sim_cost = sim.compile(small_fn)(sim.put(small_params), x)
    with make_backend("semi2k", mode="mp", dealer=TFP, timeout_s=TIMEOUT_S) as be:
        pids = be.parties.party_pids
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        h, fn = be.put(small_params), be.compile(small_fn)
        for _ in range(2):
            out, cost = fn(h, x)
        assert be.counters["compiles"] == 1 and be.counters["puts"] == {"model": 1, "data": 2}
    np.testing.assert_allclose(out, small_fn(small_params, x), atol=1e-2)
    assert cost.mode == "mp" and cost.party_order == "exact"
    assert cost.bytes_sent == sim_cost.bytes_sent and cost.send_actions == sim_cost.send_actions
    assert cost.by_op_class["truncation"].parties == (0, 1)  # every party's MPC profile
    assert_no_party_left(pids)


@pytest.mark.slow
def test_each_party_process_is_sent_only_its_own_share(small_params, monkeypatch):
    from secfwt_jax.backend import spu_backend

    sent = []
    original = spu_backend.ProcParties._send_all

    def record(self, msgs, what):
        sent.append(msgs)
        return original(self, msgs, what)

    monkeypatch.setattr(spu_backend.ProcParties, "_send_all", record)
    with make_backend("aby3", mode="mp", timeout_s=TIMEOUT_S) as be:
        be.put(small_params)
    (msgs,) = [m for m in sent if m[0][0] == "set"]
    per_party = [dict((name, (meta, tuple(chunks))) for name, meta, chunks in m[1]) for m in msgs]
    assert len(per_party) == 3
    for name in per_party[0]:
        shares = [p[name] for p in per_party]
        assert len(set(shares)) == 3  # three different shares, one per party


@pytest.mark.slow
def test_party_killed_mid_call_raises_within_timeout_and_leaves_no_process():
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    be = make_backend("semi2k", mode="mp", dealer=TFP, timeout_s=TIMEOUT_S)
    pids = be.parties.party_pids
    fn = be.compile(slow_fn)
    fn.precompile(x)  # so that the kill lands in the run, not in the compile
    killer = threading.Timer(1.0, os.kill, (pids[1], signal.SIGKILL))
    t0 = time.monotonic()
    killer.start()
    with pytest.raises(BackendError, match=r"party 1 .*died during run of slow_fn.*SIGKILL"):
        fn(x)
    assert time.monotonic() - t0 < TIMEOUT_S
    assert_no_party_left(pids)
    with pytest.raises(BackendError, match="closed"):
        fn(x)


@pytest.mark.slow
def test_party_killed_between_calls_raises_on_next_call(small_params):
    be = make_backend("aby3", mode="mp", timeout_s=TIMEOUT_S)
    pids = be.parties.party_pids
    h, fn = be.put(small_params), be.compile(small_fn)
    fn(h, np.ones((3, 8), np.float32))
    os.kill(pids[2], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"party 2 .*SIGKILL"):
        fn(h, np.ones((3, 8), np.float32))
    assert time.monotonic() - t0 < TIMEOUT_S
    assert_no_party_left(pids)


@pytest.mark.slow
def test_party_that_stops_answering_raises_within_timeout(small_params):
    be = make_backend("semi2k", mode="mp", dealer=TFP, timeout_s=3.0)
    pids = be.parties.party_pids
    h, fn = be.put(small_params), be.compile(small_fn)
    os.kill(pids[0], signal.SIGSTOP)  # alive but frozen: no heartbeat, no reply
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"party 0 .*stopped answering"):
        fn(h, np.ones((3, 8), np.float32))
    assert time.monotonic() - t0 < 3.0 + 2.0  # detection at 3 s, then killing and reaping
    assert_no_party_left(pids)
