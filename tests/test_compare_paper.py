"""Our records beside the paper's table (secfwt_jax.costs.paper: the record it picks, our
ratios and the paper's), the layer-composition check (secfwt_jax.costs.composition_check) and
experiments/compare_paper.py, their command line (`cp.main`)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
import compare_paper as cp  # noqa: E402

from secfwt_jax import costs  # noqa: E402
from secfwt_jax.costs.paper import paper_markdown, paper_rows  # noqa: E402
from secfwt_jax.costs.report import composition_markdown  # noqa: E402


def rec(method, unit, kind, layers, wall, gb, protocol="aby3", pop=1):
    return dict(method=method, unit=unit, kind=kind, layers=layers, protocol=protocol,
                model="roberta-large", seq_len=128, batch=1, population=pop, wall_s=wall,
                bytes_total=int(gb * 1e9), networks={"lan": {"total_s": wall + 1.0}},
                command=f"python experiments/bench_iteration.py # {method}")


def test_rows_use_composed_records_and_compute_both_sides_ratios():
    records = [
        rec("sft", "iteration", "measured", 1, 10.0, 5.0),
        rec("sft", "iteration", "composed", 24, 99.0, 100.0),
        rec("prompt_tuning", "iteration", "composed", 24, 119.0, 120.0),
        rec("fot_secfwt", "query", "composed", 24, 9.0, 4.0),
        rec("fot_secfwt", "generation", "composed", 24, 49.0, 80.0, pop=20),
    ]
    table = {(r["method"], r["unit"]): r for r in paper_rows(records)}
    assert set(table) == {("sft", "iteration"), ("prompt_tuning", "iteration"),
                          ("fot_secfwt", "query"), ("fot_secfwt", "generation")}
    q = table["fot_secfwt", "query"]
    assert q["kind"] == "composed"
    assert q["time_x_vs_sft"] == pytest.approx(100.0 / 10.0)  # modelled LAN times
    assert q["wall_x_vs_sft"] == pytest.approx(99.0 / 9.0)
    assert q["bytes_x_vs_sft"] == pytest.approx(25.0)
    assert q["bytes_x_vs_pt"] == pytest.approx(30.0)
    # set against the paper's forward-only + RFA row: 651.6 / 55.2 and 970.7 / 56.5
    assert q["paper_time_x_vs_sft"] == pytest.approx(11.80, abs=0.01)
    assert q["paper_bytes_x_vs_sft"] == pytest.approx(17.18, abs=0.01)
    assert "paper_lan_s" not in table["fot_secfwt", "generation"]
    text = paper_markdown(paper_rows(records))
    assert "| aby3 | fot_secfwt | query | composed | 10 | 9 | 4 | 10.0x | 11.0x | 25.0x |" in text
    assert "roberta-large, 24 layers, seq 128, batch 1" in text


def test_a_lan_ratio_of_counted_against_uncounted_rounds_is_marked():
    records = [rec("sft", "iteration", "composed", 24, 99.0, 100.0, "cheetah"),
               dict(rec("fot_secfwt", "query", "composed", 24, 9.0, 4.0, "cheetah"), rounds=7)]
    text = paper_markdown(paper_rows(records))
    assert "| cheetah | fot_secfwt | query | composed, rounds counted | 10 | 9 | 4 | 10.0x* |" \
        in text and "*: one side's rounds counted" in text
    records[0]["rounds"] = 70  # both counted: like for like, no mark
    assert "| 10.0x | 11.0x |" in paper_markdown(paper_rows(records))


def test_main_writes_markdown_and_json(tmp_path, capsys):
    path = tmp_path / "iteration.json"
    path.write_text(json.dumps([rec("sft", "iteration", "measured", 2, 3.0, 1.0, "cheetah")]))
    out = tmp_path / "cmp.md"
    cp.main(argv=[str(path), "--out", str(out)])
    assert "| cheetah | sft | iteration | measured |" in out.read_text()
    assert json.loads((tmp_path / "cmp.json").read_text())[0]["method"] == "sft"
    # a record composed from shorter sequences says so in the table
    seq = dict(rec("fot_secfwt", "query", "composed", 24, 2.0, 0.5, "cheetah"),
               composed_from_seq_lens=[16, 32])
    path.write_text(json.dumps([seq]))
    cp.main(argv=[str(path), "--out", str(out)])
    assert "| cheetah | fot_secfwt | query | composed from seq 16/32 |" in out.read_text()


def test_missing_records_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no iteration records at .*nope.json"):
        costs.load_records([str(tmp_path / "nope.json")])


def test_composition_check_sets_composed_against_measured():
    ones = [rec("fot_secfwt", "query", "measured", 1, 10.0, 3.0)]
    twos = [rec("fot_secfwt", "query", "measured", 2, 18.0, 5.0)]
    fours = [rec("fot_secfwt", "query", "measured", 4, 36.0, 9.5),
             rec("sft", "query", "measured", 4, 1.0, 1.0)]  # no 1/2-layer partner: skipped
    check = costs.composition_check(ones + twos + fours)
    assert len(check) == 1
    c = check[0]
    assert c["layers"] == 4 and c["bytes_composed"] == int(9e9)  # 3 + 3 x (5 - 3) GB
    assert c["bytes_ratio"] == pytest.approx(9.0 / 9.5)
    assert c["wall_ratio"] == pytest.approx(34.0 / 36.0)
    assert "= 0.9474 |" in composition_markdown(check)
