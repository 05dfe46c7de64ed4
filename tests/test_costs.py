"""secfwt_jax.costs: the figures algebra agrees with the backend's own sums and network model,
and refuses figures that do not line up."""

import pytest

from secfwt_jax import costs
from secfwt_jax.backend import NETWORKS, estimate_time, sum_costs
from secfwt_jax.backend.cost import OP_CLASSES, CallCost, OpClassCost


def call(sent, actions, wall, scale=1):
    n = len(sent)
    classes = {c: OpClassCost(time_s=0.1 * scale * i, bytes=scale * 10 * i,
                              send_actions=scale * i, parties=tuple(range(n)))
               for i, c in enumerate(OP_CLASSES)}
    return CallCost(
        protocol="aby3", field="FM64", fraction_bits=18, mode="sim", n_parties=n, wall_s=wall,
        exec_s=[wall] * n, bytes_sent=list(sent), bytes_recv=list(sent),
        send_actions=list(actions), recv_actions=list(actions), by_op_class=classes, ops={})


def test_add_of_figures_is_the_figures_of_sum_costs():
    a, b = call([100, 300, 5], [5, 7, 1], 1.5), call([10, 30, 7], [50, 70, 2], 0.25, scale=3)
    assert costs.add(costs.cost_figures(a), costs.cost_figures(b)) == costs.cost_figures(
        sum_costs([a, b]))


def test_networks_of_figures_are_estimate_time_of_the_call():
    c = call([10**6, 3 * 10**6, 0], [40, 50, 3], 2.0)
    nets = costs.networks(costs.cost_figures(c))
    assert set(nets) == set(costs.NETS) <= set(NETWORKS)
    for name, got in nets.items():
        want = estimate_time(c, name)
        assert got == {k: getattr(want, k) for k in costs.figures.NETWORK_KEYS}


def test_layer_composition_and_lines_are_exact_on_linear_figures():
    f = [costs.cost_figures(call([k * 100, k * 200], [k, 2 * k], 1.0 * k, scale=k))
         for k in (1, 2, 3, 24)]
    for n, want in ((3, f[2]), (24, f[3])):
        got = costs.compose_layers(f[0], f[1], n)
        for k in ("bytes_total", "bytes_sent", "send_actions", "send_actions_total"):
            assert got[k] == want[k]
        assert got["wall_s"] == pytest.approx(want["wall_s"])
        for c, v in want["by_op_class"].items():
            assert got["by_op_class"][c] == pytest.approx(v)
    assert costs.lin(f[0], f[1], 0.0) == f[0]
    with pytest.raises(ValueError, match="at least 1 encoder layer"):
        costs.compose_layers(f[0], f[1], 0)


def test_figures_that_do_not_line_up_are_refused():
    two, three = (costs.cost_figures(call([1] * n, [1] * n, 1.0)) for n in (2, 3))
    with pytest.raises(ValueError, match="party counts"):
        costs.add(two, three)
    fewer = dict(two, by_op_class={"matmul": two["by_op_class"]["matmul"]})
    with pytest.raises(ValueError, match="differ in their keys"):
        costs.add(two, fewer)
    with pytest.raises(KeyError, match="no figures .*bytes_sent"):
        costs.networks({"wall_s": 1.0})


def test_a_seq_fit_of_degree_two_needs_three_distinct_lengths():
    f = costs.cost_figures(call([1, 2], [1, 1], 1.0))
    with pytest.raises(ValueError, match=r"degree 2 needs 3 distinct sequence lengths.*\[16, 16"):
        costs.fit_seq([(16, f), (16, f), (32, f)], 128, 2)
