"""Backend API without spu: names, the plaintext backend, cost records, log parsing, the
network model. (SPU protocols: test_backend_spu.py and test_backend_mp.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax.backend import (
    FIELDS,
    MODES,
    NETWORKS,
    OP_CLASSES,
    PROTOCOLS,
    CostParseError,
    Handle,
    NetworkSetting,
    estimate_time,
    make_backend,
    sum_costs,
)
from secfwt_jax.backend.cost import (
    CallCost,
    OpClassCost,
    build_cost,
    op_class,
    parse_party_log,
    parse_shared_log,
)


def affine(p, x):
    return x @ p["w"] + p["b"]


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.ones(3, np.float32)}


# -- names ---------------------------------------------------------------------------------


def test_accepted_names():
    assert PROTOCOLS == ("plaintext", "plaintext_fxp", "aby3", "semi2k", "cheetah", "ref2k")
    assert MODES == ("sim", "mp")
    assert FIELDS == ("FM64", "FM128")
    assert set(NETWORKS) == {"lan", "wan100", "wan200"}


@pytest.mark.parametrize(
    "kwargs, bad, accepted",
    [
        (dict(protocol="spdz"), "'spdz'", "aby3, semi2k, cheetah"),
        (dict(protocol="aby3", mode="threads"), "'threads'", "sim, mp"),
        (dict(protocol="aby3", field="FM256"), "'FM256'", "FM64, FM128"),
    ],
)
def test_unknown_names_raise_value_error_naming_accepted_ones(kwargs, bad, accepted):
    with pytest.raises(ValueError) as e:
        make_backend(**kwargs)
    assert bad in str(e.value) and accepted in str(e.value)


def test_unknown_network_raises_value_error_naming_accepted_ones():
    with pytest.raises(ValueError, match="lan, wan100, wan200"):
        estimate_time(_cost([10], [1]), "5g")


# -- plaintext backend ------------------------------------------------------------------------


def test_plaintext_call_matches_jax_and_returns_numpy(params):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with make_backend("plaintext") as be:
        h = be.put(params, owner="model")
        out, cost = be.compile(affine)(h, x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, x @ params["w"] + params["b"], rtol=1e-6)
    assert cost.protocol == "plaintext" and cost.bytes_total == 0 and cost.wall_s > 0


def test_plaintext_compiles_once_and_shares_weights_once(params):
    with make_backend("plaintext") as be:
        h = be.put(params, owner="model")
        fn = be.compile(affine)
        for i in range(3):
            fn(h, np.full((2, 4), i, np.float32))
        assert be.counters["compiles"] == 1
        assert be.counters["puts"] == {"model": 1, "data": 3}
        assert be.counters["calls"] == 3
        fn(h, np.zeros((5, 4), np.float32))  # new shape: a second executable
        assert be.counters["compiles"] == 2


def test_precompile_builds_the_executable_without_running(params):
    spec = jax.ShapeDtypeStruct((2, 4), np.float32)
    with make_backend("plaintext") as be:
        h = be.put(params)
        fn = be.compile(affine)
        fn.precompile(h, spec)
        assert be.counters["compiles"] == 1 and be.counters["calls"] == 0
        fn(h, np.ones((2, 4), np.float32))
        assert be.counters["compiles"] == 1
        with pytest.raises(TypeError, match="precompile"):
            fn(h, spec)


def test_plaintext_kept_output_is_a_handle_later_calls_accept(params):
    with make_backend("plaintext") as be:
        h = be.put(params)
        kept, _ = be.compile(affine)(h, np.ones((2, 4), np.float32), reveal=False)
        assert isinstance(kept, Handle) and kept.shapes == (2, 3)
        out, _ = be.compile(lambda y, z: {"sum": y + z[0]})(kept, (np.ones(3, np.float32),))
    np.testing.assert_allclose(out["sum"], np.ones((2, 4)) @ params["w"] + params["b"] + 1)


def test_handle_of_another_backend_is_rejected(params):
    with make_backend("plaintext") as a, make_backend("plaintext") as b:
        h = a.put(params)
        with pytest.raises(ValueError, match="another backend"):
            b.compile(affine)(h, np.ones((2, 4), np.float32))


def test_float64_inputs_run_as_float32(params):
    with make_backend("plaintext") as be:
        out, _ = be.compile(affine)(be.put(params), np.ones((2, 4)))
    assert out.dtype == np.float32


# -- cost records -----------------------------------------------------------------------------


def _cost(sent, actions, wall=1.0):
    n = len(sent)
    return CallCost(
        protocol="semi2k", field="FM64", fraction_bits=18, mode="sim", n_parties=n, wall_s=wall,
        exec_s=[wall] * n, bytes_sent=list(sent), bytes_recv=list(sent), send_actions=list(actions),
        recv_actions=list(actions), by_op_class={c: OpClassCost() for c in OP_CLASSES}, ops={},
    )


def test_cost_to_dict_is_json_and_separates_measured_from_modelled():
    d = _cost([100, 300], [5, 7]).to_dict()
    json.dumps(d)
    assert set(d) == {"setting", "measured", "modelled"}
    assert d["measured"]["bytes_total"] == 400 and d["measured"]["send_actions_total"] == 12
    assert set(d["modelled"]["networks"]) == {"lan", "wan100", "wan200"}


def test_network_estimate_is_compute_plus_bytes_over_bandwidth_plus_rounds_times_latency():
    est = estimate_time(_cost([10**6, 3 * 10**6], [40, 50], wall=2.0), "wan100")
    assert est.compute_s == 2.0
    assert est.transfer_s == pytest.approx(8 * 3e6 / 100e6)  # the busiest sender's bytes
    assert est.rounds == 50 and est.latency_s == pytest.approx(50 * 0.080)
    assert est.total_s == pytest.approx(2.0 + 0.24 + 4.0)


def test_network_estimate_accepts_a_custom_setting():
    net = NetworkSetting("dc", bandwidth_bps=1e9, latency_s=1e-4)
    est = estimate_time(_cost([125_000_000], [10], wall=0.0), net)
    assert est.network == "dc" and est.total_s == pytest.approx(1.0 + 10 * 1e-4)


@pytest.mark.parametrize(
    "bad", [dict(bandwidth_bps=0, latency_s=1e-3), dict(bandwidth_bps=1e9, latency_s=-1)]
)
def test_network_setting_rejects_impossible_values(bad):
    with pytest.raises(ValueError):
        NetworkSetting("x", **bad)


def test_sum_costs_adds_per_party_figures():
    total = sum_costs([_cost([1, 2], [3, 4]), _cost([10, 20], [30, 40])])
    assert total.bytes_sent == [11, 22] and total.send_actions == [33, 44] and total.wall_s == 2.0


def test_plaintext_cost_has_zero_bytes_and_zero_network_overhead():
    with make_backend("plaintext") as be:
        _, cost = be.compile(jnp.sin)(np.ones(3, np.float32))
    est = estimate_time(cost, "wan100")
    assert est.transfer_s == 0 and est.latency_s == 0 and est.total_s == cost.wall_s


@pytest.mark.parametrize(
    "name, cls",
    [("pphlo.dot", "matmul"), ("pphlo.exponential", "exp"), ("pphlo.divide", "reciprocal"),
     ("pphlo.rsqrt", "reciprocal"), ("pphlo.less", "comparison"), ("pphlo.cosine", "trig"),
     ("pphlo.multiply", "other")],
)
def test_op_class_of_hlo_ops(name, cls):
    assert op_class(name) == cls


# -- parsing SPU's profile log ------------------------------------------------------------------

P = "2026-01-01 00:00:00.000 [info] [api.cc:printProfilingData:{}] "


def _op(name, sb, sa, t=0.001, rb=None, ra=None):
    rb, ra = sb if rb is None else rb, sa if ra is None else ra
    return P.format(223) + (
        f"- {name}, executed 1 times, duration {t}s, send bytes {sb} recv bytes {rb}, "
        f"send actions {sa}, recv actions {ra}"
    )


def _header(name, exec_s):
    return P.format(172) + (
        f"[Profiling] SPU execution {name} completed, input processing took 1e-06s, execution "
        f"took {exec_s}s, output processing took 1e-06s, total time {exec_s}s."
    )


def _link(sb, rb, sa, ra):
    return P.format(233) + (
        f"Link details: total send bytes {sb}, recv bytes {rb}, "
        f"send actions {sa}, recv actions {ra}"
    )


def _section(kind):
    return P.format(220) + f"{kind} profiling: total time 0.01"


def test_parse_party_log_reads_ops_sections_and_link_totals():
    text = "\n".join([
        _header("f.r1", 0.5), _section("HLO"), _op("pphlo.dot", 100, 2), _op("pphlo.divide", 50, 3),
        _section("HAL"), _op("f_mmul", 100, 2), _section("MPC"), _op("trunc_a", 40, 1),
        _link(150, 140, 5, 6),
    ])
    prof = parse_party_log(text)
    assert prof.exec_s == 0.5 and prof.link == (150, 140, 5, 6)
    assert prof.hlo["pphlo.dot"].send_bytes == 100 and prof.mpc["trunc_a"].send_actions == 1


def test_parse_party_log_without_link_line_raises():
    with pytest.raises(CostParseError, match="Link details"):
        parse_party_log("\n".join([_section("HLO"), _op("pphlo.dot", 1, 1)]))


def test_shared_log_attributes_link_lines_by_party_zeros_hal_sums():
    # Two parties' blocks interleaved line by line; party 0 alone prints HAL/MPC sections.
    p0 = [_header("f.r0", 0.3), _section("HLO"), _op("pphlo.dot", 70, 2, rb=60, ra=2),
          _section("HAL"), _op("f_mmul", 70, 2, rb=60, ra=2), _section("MPC"),
          _op("trunc_a", 20, 1), _link(70, 60, 2, 2)]
    p1 = [_header("f.r1", 0.4), _section("HLO"), _op("pphlo.dot", 60, 2, rb=70, ra=2),
          _link(60, 70, 2, 2)]
    text = "\n".join([p1[0], p0[0], p1[1], p0[1], p0[2], p1[2], p1[3], *p0[3:]])
    profs, order, notes = parse_shared_log(text, 2)
    assert order == "exact" and not notes
    assert [p.link for p in profs] == [(70, 60, 2, 2), (60, 70, 2, 2)]
    assert [p.exec_s for p in profs] == [0.3, 0.4]
    assert profs[0].hlo["pphlo.dot"].send_bytes == 130  # HLO lines of both parties, summed
    cost = build_cost(
        profs, merged_hlo=True, truncation_parties=(0,), protocol="semi2k", field="FM64",
        fraction_bits=18, mode="sim", wall_s=1.0, party_order=order,
    )
    assert cost.bytes_sent == [70, 60] and cost.by_op_class["matmul"].bytes == 130
    assert cost.by_op_class["truncation"].bytes == 20
    assert cost.by_op_class["truncation"].parties == (0,)


def test_shared_log_with_missing_party_block_raises():
    with pytest.raises(CostParseError, match="expected 3"):
        parse_shared_log("\n".join([_section("HLO"), _link(1, 1, 1, 1)]), 3)

