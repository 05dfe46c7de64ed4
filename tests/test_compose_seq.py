"""Per-iteration figures at a sequence length composed from records at shorter ones
(secfwt_jax.costs.compose_seq: polynomial through the points), the SFT step from its parts, and
the check; experiments/compose_seq.py is their command line (`cs.main`)."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
import compose_seq as cs  # noqa: E402

from secfwt_jax import costs  # noqa: E402


def figures(a: float, b: float, c: float, s: int) -> dict:
    """Figures of a synthetic program whose every cost is a + b S + c S^2."""
    v = a + b * s + c * s * s
    return dict(
        wall_s=v, bytes_total=int(1000 * v), bytes_sent=[int(600 * v), int(400 * v)],
        send_actions=[int(10 * v), int(5 * v)], send_actions_total=int(15 * v),
        by_op_class={"matmul": dict(time_s=v / 2, bytes=int(500 * v), send_actions=int(5 * v))},
        party_order=["p0", "p1"])


def rec(method, unit, s, layers=24, kind="composed", coef=(100, 10, 0), **extra):
    fig = figures(*coef, s)
    return dict(
        method=method, protocol="cheetah", model="roberta-large", layers=layers, seq_len=s,
        batch=1, population=1, prompt_len=0 if method.startswith("sft") else round(50 * s / 128),
        unit=unit, definition="d", field="FM64", mode="sim", weights="random", kind=kind,
        command=f"python experiments/bench_iteration.py seq_len={s}", **fig,
        networks=costs.networks(fig), **extra)


def write(tmp_path, name, records):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(records))
    return str(path)


@pytest.mark.parametrize("degree,coef", [(1, (100, 10, 0)), (2, (100, 10, 0.5))])
def test_the_fit_recovers_a_polynomial_cost_at_the_target_length(degree, coef):
    seqs = (16, 32, 64)[: degree + 1]
    records = [rec("fot_secfwt", "query", s, coef=coef) for s in seqs]
    # a shallower record at the same length must not be used
    records.append(rec("fot_secfwt", "query", 32, layers=1, kind="measured", coef=(1, 1, 1)))
    for r, s in zip(records, seqs):
        r["source"] = f"f{s}.json"
    (out,) = costs.compose_seq(records, 128, degree, "cmd", prompt_len=50, time_degree=degree)
    assert costs.compose_seq(records, 128, degree, "cmd")[0]["prompt_len"] == round(
        records[degree]["prompt_len"] * 128 / seqs[-1])
    want = figures(*coef, 128)
    assert out["wall_s"] == pytest.approx(want["wall_s"])
    assert out["bytes_total"] == pytest.approx(want["bytes_total"], abs=2)
    assert out["bytes_sent"] == pytest.approx(want["bytes_sent"], abs=2)
    assert out["by_op_class"]["matmul"]["bytes"] == pytest.approx(
        want["by_op_class"]["matmul"]["bytes"], abs=2)
    assert out["seq_len"] == 128 and out["prompt_len"] == 50 and out["layers"] == 24
    assert out["kind"] == "composed" and out["composed_from_seq_lens"] == list(seqs)
    assert out["networks"]["lan"]["total_s"] > out["wall_s"]


def test_bytes_take_the_degree_and_time_and_rounds_the_line_through_the_two_longest():
    records = [dict(rec("sft_grad", "part", s, coef=(100, 10, 0.5)), source="x")
               for s in (16, 32, 64)]
    (out,) = costs.compose_seq(records, 128, 2, "cmd")  # time_degree 1 by default
    quad, at = figures(100, 10, 0.5, 128), {s: figures(100, 10, 0.5, s) for s in (32, 64)}
    line = 3 * at[64]["wall_s"] - 2 * at[32]["wall_s"]  # through 32 and 64, read at 128
    assert out["bytes_total"] == pytest.approx(quad["bytes_total"], abs=2)
    assert out["by_op_class"]["matmul"]["bytes"] == pytest.approx(
        quad["by_op_class"]["matmul"]["bytes"], abs=2)
    assert out["wall_s"] == pytest.approx(line) and out["wall_s"] < quad["wall_s"]
    assert out["by_op_class"]["matmul"]["time_s"] == pytest.approx(line / 2)
    assert max(out["send_actions"]) == pytest.approx(10 * line, abs=2)
    assert out["time_degree"] == 1 and "degree 1 through seq [32, 64]" in out["composition"]
    with pytest.raises(ValueError, match=r"time_degree 2 is not in 0..degree \(1\)"):
        costs.compose_seq(records[1:], 128, 1, "cmd", time_degree=2)


def test_a_linear_fit_of_quadratic_costs_underestimates():
    """The degree is a claim about the program; the check (below) is what tests it."""
    records = [dict(rec("sft_grad", "part", s, coef=(0, 1, 1)), source="x") for s in (32, 64)]
    (out,) = costs.compose_seq(records, 128, 1, "cmd")
    assert out["wall_s"] < figures(0, 1, 1, 128)["wall_s"]


def test_too_few_or_too_many_lengths_name_what_is_there():
    records = [dict(rec("fot_secfwt", "query", s), source="x") for s in (32, 64)]
    with pytest.raises(ValueError, match=r"degree 2 needs 3 sequence lengths.*\[32, 64\]"):
        costs.compose_seq(records, 128, 2, "cmd")
    records.append(dict(rec("fot_secfwt", "query", 16), source="x"))
    with pytest.raises(ValueError, match=r"degree 1 needs 2"):
        costs.compose_seq(records, 128, 1, "cmd")


def test_sft_step_from_the_grad_part_at_the_target_and_the_whole_update(tmp_path):
    grad = [rec("sft_grad", "part", s, coef=(50, 2, 0.1)) for s in (16, 32, 64)]
    # slices of 5, 10 and 20 of 1000 entries, every figure 0.7 x entries, but the largest two
    # (the line's points) set apart from the smallest (the check) by 10%; and the benchmark's
    # own whole record (the first two slices listed), which is not used
    update = [rec("sft_update", "part", 128, kind="measured", coef=(0.7 * n, 0, 0), entries=n,
                  entries_full=1000, slice_divisor=1000 // n) for n in (5, 10, 20)]
    update[0].update(figures(0.7 * 5 / 1.1, 0, 0, 128))
    update.append(rec("sft_update", "part", 128, coef=(1.0, 0, 0), entries=1000,
                      entries_full=1000))
    paths = [write(tmp_path, "grad", grad), write(tmp_path, "update", update)]
    out = tmp_path / "out"
    cs.main(argv=[*paths, "--seq", "128", "--degree", "2", "--time-degree", "2", "--out", str(out)])
    records = json.loads((out / "iteration.json").read_text())
    by = {r["method"]: r for r in records}
    assert set(by) == {"sft_grad", "sft_update", "sft"}
    upd = by["sft_update"]
    assert upd["wall_s"] == pytest.approx(700)  # the line through the two largest slices
    assert upd["composed_from_entries"] == [10, 20]
    (check,) = upd["line_checks"]
    assert check["entries"] == 5 and check["wall_ratio"] == pytest.approx(1.1)
    want_grad = figures(50, 2, 0.1, 128)
    assert by["sft_grad"]["wall_s"] == pytest.approx(want_grad["wall_s"])
    sft = by["sft"]
    assert sft["unit"] == "iteration" and sft["kind"] == "composed"
    assert sft["wall_s"] == pytest.approx(700 + want_grad["wall_s"])
    with pytest.raises(ValueError, match="cheetah sft_update: need two measured slices"):
        costs.whole_update([dict(update[0], source="x")])
    assert sft["bytes_total"] == by["sft_grad"]["bytes_total"] + by["sft_update"]["bytes_total"]
    assert sft["by_op_class"]["matmul"]["bytes"] == (
        by["sft_grad"]["by_op_class"]["matmul"]["bytes"]
        + by["sft_update"]["by_op_class"]["matmul"]["bytes"])
    assert sft["seq_len"] == 128 and sft["composed_from_seq_lens"] == [16, 32, 64]
    assert "compose_seq.py" in sft["command"]
    assert (out / "iteration.md").exists()


def test_check_compares_with_a_record_at_the_target_length(tmp_path):
    pts = [rec("fot_secfwt", "query", s, coef=(100, 10, 0)) for s in (16, 32)]
    # a quadratic method in the same files, left out by --methods
    pts += [rec("sft_grad", "part", s, coef=(1, 1, 1)) for s in (16, 32, 48)]
    # the "measurement" at 64 is 10% above the linear cost
    target = rec("fot_secfwt", "query", 64, coef=(110, 11, 0))
    out = tmp_path / "out"
    cs.main(argv=[write(tmp_path, "pts", pts), "--seq", "64", "--degree", "1", "--out", str(out),
             "--methods", "fot_secfwt", "--check", write(tmp_path, "target", [target])])
    (row,) = json.loads((out / "seq_check.json").read_text())
    assert row["wall_ratio"] == pytest.approx(1 / 1.1)
    assert row["bytes_ratio"] == pytest.approx(1 / 1.1, rel=1e-3)
    assert row["from_seq"] == [16, 32]
    text = (out / "seq_check.md").read_text()
    assert "| [16, 32] |" in text and "= 0.9091 |" in text and "= 0.909 |" in text


def test_missing_file_and_unmatched_check_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        cs.main(argv=[str(tmp_path / "nope.json"), "--seq", "128", "--degree", "1", "--out",
                 str(tmp_path / "o")])
    pts = [rec("fot_secfwt", "query", s) for s in (16, 32)]
    with pytest.raises(ValueError, match=r"methods \['sft'\] are not in the records"):
        cs.main(argv=[write(tmp_path, "pts", pts), "--seq", "64", "--degree", "1", "--out",
                 str(tmp_path / "o"), "--methods", "sft"])
    other = rec("fot_puma", "query", 64)
    with pytest.raises(ValueError, match="no record .* matches"):
        cs.main(argv=[write(tmp_path, "pts", pts), "--seq", "64", "--degree", "1", "--out",
                 str(tmp_path / "o"), "--check", write(tmp_path, "other", [other])])


def test_update_extrapolation_in_the_entries_keeps_flat_rounds_and_extends_growing_ones():
    """costs.extrapolate_entries (sft_update measured on slices): bytes and time on the line
    through the slices; send actions on it only where they grow with the entries."""

    def fig(n, rounds):
        return dict(wall_s=1.0 + n / 100, bytes_total=10 * n, bytes_sent=[6 * n, 4 * n],
                    send_actions=[rounds(n), 100], send_actions_total=rounds(n) + 100,
                    by_op_class={"reciprocal": dict(time_s=n / 100, bytes=10 * n,
                                                    send_actions=rounds(n))},
                    party_order=["p0", "p1"])

    growing = costs.extrapolate_entries(fig(100, lambda n: 50 + n), fig(200, lambda n: 50 + n),
                                        100, 200, 10_000)
    assert growing["bytes_total"] == 100_000 and growing["wall_s"] == pytest.approx(101.0)
    assert growing["send_actions"] == [10_050, 100]
    assert growing["by_op_class"]["reciprocal"]["send_actions"] == 10_050
    # +-1% noise between the slices must not be read 100x further out
    flat = costs.extrapolate_entries(fig(100, lambda n: 1000 + (n == 100) * 10),
                                     fig(200, lambda n: 1000 + (n == 100) * 10), 100, 200, 10_000)
    assert flat["send_actions"] == [1000, 100]
    assert flat["send_actions_total"] == 1100
    assert flat["bytes_total"] == 100_000
    # a count that shrinks between the slices is not read out (it would go negative)
    shrinking = costs.extrapolate_entries(fig(100, lambda n: 1100 - n),
                                          fig(200, lambda n: 1100 - n), 100, 200, 10_000)
    assert shrinking["by_op_class"]["reciprocal"]["send_actions"] == 900


def test_send_actions_that_do_not_grow_with_the_sequence_stay_the_longest_records():
    records = [dict(rec("fot_secfwt", "query", s), source="x") for s in (32, 64)]
    # ABY3-like: the total within 1% between lengths, one party's count off by 10%
    records[0].update(send_actions=[1000, 550], send_actions_total=1550)
    records[1].update(send_actions=[1060, 500], send_actions_total=1560)
    (out,) = costs.compose_seq(records, 128, 1, "cmd")
    assert out["send_actions"] == [1060, 500] and out["send_actions_total"] == 1560
    assert out["bytes_total"] == figures(100, 10, 0, 128)["bytes_total"]


def test_a_concave_fit_never_reads_below_the_longest_point():
    """Cheetah's HE matmul bytes grow ever slower with the sequence; a quadratic through them
    turns down beyond the points. Such a figure takes the line through the two longest."""
    records = [dict(rec("sft_grad", "part", s, coef=(100, 10, 0)), source="x")
               for s in (8, 16, 32)]
    for r, mm in zip(records, (21.75, 22.78, 23.61)):
        r["by_op_class"]["matmul"]["bytes"] = int(mm * 1e9)
    (out,) = costs.compose_seq(records, 128, 2, "cmd")
    assert out["by_op_class"]["matmul"]["bytes"] == pytest.approx(
        23.61e9 + 6 * (23.61e9 - 22.78e9), rel=1e-9)
    assert out["bytes_total"] == pytest.approx(figures(100, 10, 0, 128)["bytes_total"], abs=2)


def test_sft_step_at_the_target_from_a_step_and_its_grad_part_at_one_length(tmp_path):
    """Without sft_update records, the update is the measured step - its grad part at one
    length (the update has no sequence in it); the step at the target is the fitted grad part
    plus that update."""
    grad = [rec("sft_grad", "part", s, coef=(50, 2, 0.1)) for s in (16, 32, 64)]
    step = rec("sft", "iteration", 64, coef=(750, 2, 0.1))  # the grad part + 700 in every figure
    out = tmp_path / "out"
    cs.main(argv=[write(tmp_path, "grad", grad), write(tmp_path, "step", [step]), "--seq", "128",
            "--degree", "2", "--time-degree", "2", "--out", str(out)])
    by = {r["method"]: r for r in json.loads((out / "iteration.json").read_text())}
    assert set(by) == {"sft_grad", "sft_update", "sft"}
    assert by["sft_update"]["wall_s"] == pytest.approx(700)
    assert by["sft_update"]["bytes_total"] == pytest.approx(700_000, abs=2)
    assert "the SFT step - its sft_grad part at seq 64" in by["sft_update"]["composition"]
    assert by["sft"]["wall_s"] == pytest.approx(figures(750, 2, 0.1, 128)["wall_s"])
    assert by["sft"]["bytes_total"] == pytest.approx(figures(750, 2, 0.1, 128)["bytes_total"],
                                                     abs=4)
    with pytest.raises(ValueError, match=r"differ in \['seq_len'\]"):
        costs.records.update_from_step(step, grad[0])


def test_time_degree_zero_leaves_times_uncomposed_and_bytes_fitted():
    records = [dict(rec("fot_puma", "query", s, coef=(100, 10, 0.5)), source="x")
               for s in (16, 32, 64)]
    (out,) = costs.compose_seq(records, 128, 2, "cmd", time_degree=0)
    assert math.isnan(out["wall_s"]) and math.isnan(out["by_op_class"]["matmul"]["time_s"])
    assert math.isnan(out["networks"]["lan"]["total_s"])
    assert out["bytes_total"] == pytest.approx(figures(100, 10, 0.5, 128)["bytes_total"], abs=2)
    assert "wall time: not composed (NaN)" in out["composition"]
