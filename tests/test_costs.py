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


def counted(c, rounds):
    import dataclasses

    return dataclasses.replace(c, rounds=rounds)


def test_counted_rounds_are_a_figure_that_compositions_keep_only_when_all_points_have_them():
    one = costs.cost_figures(counted(call([100, 200, 50], [40, 45, 3], 1.0), 30))
    two = costs.cost_figures(counted(call([150, 300, 70], [60, 70, 4], 1.5), 50))
    plain = costs.cost_figures(call([150, 300, 70], [60, 70, 4], 1.5))
    assert one["rounds"] == 30 and "rounds" not in plain
    assert costs.compose_layers(one, two, 24)["rounds"] == 30 + 23 * 20
    assert costs.add(one, two)["rounds"] == 80
    assert "rounds" not in costs.add(one, plain)  # one program's rounds unknown: none
    # the network model charges the counted rounds, not the 45 send actions
    lat = NETWORKS["wan100"].latency_s
    assert costs.networks(one)["wan100"]["latency_s"] == pytest.approx(30 * lat)
    assert costs.networks(plain)["wan100"]["latency_s"] == pytest.approx(70 * lat)
    # flat counted rounds (within FLAT_ROUNDS) are kept, growing ones extrapolated
    flat = costs.cost_figures(counted(call([150, 300, 70], [60, 70, 4], 1.5), 31))
    assert costs.extrapolate_entries(one, flat, 1, 2, 100)["rounds"] == 31
    assert costs.extrapolate_entries(one, two, 1, 2, 3)["rounds"] == 70


def iteration_records(layer_figs, seq=32):
    base = dict(method="fot_secfwt", protocol="cheetah", model="roberta-large", seq_len=seq,
                batch=1, population=1, prompt_len=12, unit="query", definition="d",
                field="FM64", mode="sim", weights="random", command="bench_iteration ...")
    recs = [dict(base, layers=n, kind="measured", **f, networks=costs.networks(f))
            for n, f in zip((1, 2), layer_figs)]
    fig = costs.compose_layers(*layer_figs, 24)
    recs.append(dict(base, layers=24, kind="composed", composed_from_layers=[1, 2], **fig,
                     networks=costs.networks(fig)))
    return recs


def relayed_run(layers, bytes_sent, depths, seq=32, latency_s=0.010, actions=None):
    actions = actions or ([400, 420] if layers == 1 else [700, 720])
    return dict(protocol="cheetah", model="roberta-large", layers=layers, seq_len=seq, batch=1,
                prompts=1, cost=dict(bytes_sent=list(bytes_sent), send_actions=actions),
                command="bench_wan ...",
                shapes={"10ms_1gbps": dict(latency_s=latency_s, bandwidth_bps=1e9)},
                runs={"10ms_1gbps": [dict(wall_s=1.0, relay=dict(depth=d)) for d in depths]})


def test_attach_rounds_takes_the_relay_depth_of_the_same_program_and_composes_the_layers():
    f1 = costs.cost_figures(call([100, 200], [400, 420], 1.0))
    f2 = costs.cost_figures(call([150, 300], [700, 720], 1.8))
    recs = iteration_records([f1, f2])
    runs = [relayed_run(1, [100, 200], [120, 130, 125]), relayed_run(2, [150, 300], [200])]
    runs[1]["cost"]["bytes_sent"][0] += 0.5e-4 * 150  # Cheetah's bytes vary a little
    said = costs.attach_rounds(recs, runs, "10ms_1gbps")
    assert [r.get("rounds") for r in recs] == [125, 200, 125 + 23 * 75]
    assert len(said) == 3 and "125 rounds (max send actions 420)" in said[0]
    lat = NETWORKS["wan100"].latency_s
    assert recs[2]["networks"]["wan100"]["latency_s"] == pytest.approx((125 + 23 * 75) * lat)
    # composed to a longer sequence: rounds carried where every point has them, else dropped
    at64 = iteration_records([costs.lin(f1, f2, 0.5), f2], seq=64)
    for r in recs + at64:
        r["source"] = "x.json"
    got = costs.compose_seq(recs + at64, 128, 1, "compose_seq ...")
    assert "rounds" not in got[0] and "rounds_counted" not in got[0]
    costs.attach_rounds(at64, [relayed_run(n, r["bytes_sent"], [d], seq=64,
                                           actions=r["send_actions"])
                               for n, r, d in ((1, at64[0], 140), (2, at64[1], 230))],
                        "10ms_1gbps")
    got = costs.compose_seq(recs + at64, 128, 1, "compose_seq ...")
    r32, r64 = 125 + 23 * 75, 140 + 23 * 90
    assert got[0]["rounds"] == round(r64 + 2 * (r64 - r32))
    assert got[0]["rounds_counted"]["setting"] == "10ms_1gbps"


def test_attach_rounds_matches_the_parts_of_an_sft_step_by_part_and_slice():
    """bench_wan part=sft_grad / part=sft_update runs go to the sft_grad record and to the
    update slice of the same divisor only (a FoT query of the same shape is another setting,
    not an error), and the whole update read off the two slices takes their rounds as its
    other figures (linear in the entries, the larger's where flat)."""
    f1 = costs.cost_figures(call([100, 200], [400, 420], 1.0))
    f2 = costs.cost_figures(call([150, 300], [700, 720], 1.8))
    grad = [dict(r, method="sft_grad", unit="part", prompt_len=0)
            for r in iteration_records([f1, f2])]
    query = iteration_records([f1, f2])
    upd = dict(method="sft_update", protocol="cheetah", model="roberta-large", seq_len=128,
               batch=1, population=1, prompt_len=0, unit="part", layers=24, kind="measured",
               entries_full=1000, definition="d", field="FM64", mode="sim",
               weights="random", command="bench_iteration ...")
    slices = [dict(upd, slice_divisor=d, entries=n, **f, networks=costs.networks(f))
              for d, n, f in ((512, 2, f1), (256, 4, f2))]
    whole = costs.whole_update_record(tuple(slices), [], "line")
    assert "rounds" not in whole
    recs = grad + query + slices + [whole]

    def part_run(part, layers, bytes_sent, actions, depth, seq=32, **extra):
        return dict(relayed_run(layers, bytes_sent, [depth], seq=seq, actions=actions),
                    part=part, **extra)

    runs = [part_run("sft_grad", 1, [100, 200], [400, 420], 90),
            part_run("sft_grad", 2, [150, 300], [700, 720], 150),
            part_run("sft_update", 24, [150, 300], [700, 720], 60, seq=128, slice_divisor=256),
            part_run("sft_update", 24, [100, 200], [400, 420], 50, seq=128, slice_divisor=512)]
    costs.attach_rounds(recs, runs, "10ms_1gbps")
    assert [r.get("rounds") for r in grad] == [90, 150, 90 + 23 * 60]
    assert all("rounds" not in r for r in query)  # the same shapes, but not the same program
    assert [r["rounds"] for r in slices] == [50, 60]
    assert whole["rounds"] == 50 + (1000 - 2) / 2 * 10  # the line through (2, 50), (4, 60)
    assert whole["rounds_counted"]["setting"] == "10ms_1gbps"
    lat = NETWORKS["wan100"].latency_s
    assert whole["networks"]["wan100"]["latency_s"] == pytest.approx(whole["rounds"] * lat)
    # compose_seq's whole update (whole_update_record) carries them the same way
    again = costs.whole_update_record(tuple(slices), [], "line")
    assert again["rounds"] == whole["rounds"] and again["rounds_counted"]["setting"]


def test_attach_rounds_refuses_another_program_and_a_latency_too_small_to_count():
    f1 = costs.cost_figures(call([100, 200], [400, 420], 1.0))
    f2 = costs.cost_figures(call([150, 300], [700, 720], 1.8))
    with pytest.raises(ValueError, match=r"sent \[\[100, 201\]\].*\[100, 200\] .*: not the "):
        costs.attach_rounds(iteration_records([f1, f2]), [relayed_run(1, [100, 201], [5])],
                            "10ms_1gbps")
    with pytest.raises(ValueError, match=r"\[\[400, 421\]\] send actions.*in \[400, 420\]"):
        costs.attach_rounds(iteration_records([f1, f2]),
                            [relayed_run(1, [100, 200], [5], actions=[400, 421])], "10ms_1gbps")
    with pytest.raises(ValueError, match="no calls at '10ms_1gbps' to count rounds on"):
        costs.attach_rounds(iteration_records([f1, f2]),
                            [relayed_run(1, [100, 200], [5], latency_s=0.001)], "10ms_1gbps")
    recs = iteration_records([f1, f2])
    assert costs.attach_rounds(recs, [relayed_run(1, [100, 200], [5], seq=64)], "10ms_1gbps") \
        == [] and all("rounds" not in r for r in recs)
