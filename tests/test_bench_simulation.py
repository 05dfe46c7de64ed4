"""experiments/bench_simulation.py's tuning case: the whole plaintext loop runs the budget (not an
extrapolation), on a tiny model and budget, without importing spu."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))

import bench_simulation  # noqa: E402
import common  # noqa: E402

ARGS = ["--model", "tiny", "--cases", "tuning", "--budget", "20", "--popsize", "4",
        "--intrinsic-dim", "6", "--prompt-len", "3", "--seq", "10", "--batch", "6", "--dev", "4",
        "--eval-every", "8", "--generations", "1", "--loop-generations", "1",
        "--fxp-generations", "1"]


@pytest.mark.slow
def test_tuning_case_runs_the_whole_budget_end_to_end(tmp_path):
    # a fresh process: the benchmark refuses to run where spu is imported, as it is in a
    # pytest process that has run the secure tests
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments",
                          "bench_simulation.py")
    subprocess.run([sys.executable, script, *ARGS, "--out", str(tmp_path)], check=True,
                   timeout=600)
    (json_file,) = tmp_path.glob("bench_tiny_*.json")
    out = json.loads(json_file.read_text())
    e = out["end_to_end"]
    assert out["results"] == []  # only the tuning case was asked for
    assert (e["generations"], e["queries"], e["extrapolated"]) == (5, 20, False)
    assert e["dev_checks"] == 2  # BBT's rule: calls 8 and 16, in generations 2 and 4
    assert 0 < e["loop_s"] <= e["run_s"] <= e["total_s"]
    assert e["generation_s_median"] > 0 and e["queries_per_s"] > 0
    md = next(tmp_path.glob("bench_tiny_*.md")).read_text()
    assert "End-to-end tuning run (plaintext, not extrapolated)" in md


def test_unknown_case_is_rejected_with_the_accepted_ones():
    cfg = common.load_config("bench_simulation", ["cases=[tuning,bogus]"])
    with pytest.raises(ValueError, match="unknown case 'bogus'; accepted: population, .*tuning"):
        bench_simulation.check_config(cfg)


def test_legacy_arguments_become_the_same_hydra_overrides():
    legacy = common.legacy_overrides(ARGS + ["--fxp-fast", "--out", "a b"],
                                     bench_simulation.Config)
    assert legacy[:4] == ["model=tiny", "cases=[tuning]", "budget=20", "popsize=4"]
    assert legacy[-2:] == ["fxp_fast=true", "out='a b'"]
    cfg = common.load_config("bench_simulation", legacy)
    assert (cfg.model, list(cfg.cases), cfg.fxp_fast, cfg.out) == ("tiny", ["tuning"], True, "a b")
