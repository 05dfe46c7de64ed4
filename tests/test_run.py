"""`python experiments/run.py`: run directories, summaries, multirun tables, bad input."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("SECFWT_SHARED", ROOT.parent / "shared"))


def run(*overrides, cwd=ROOT, check=True):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), *overrides, "progress=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=1200)
    if check and out.returncode != 0:
        raise AssertionError(out.stdout[-3000:] + out.stderr[-3000:])
    return out


@pytest.mark.slow
def test_planted_run_writes_config_metrics_and_summary(tmp_path):
    run(f"hydra.run.dir={tmp_path}", "budget=30")
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("task", "protocol", "model", "generations", "queries", "final_loss", "train_acc",
                "dev_metric", "test_metric", "bytes_total", "wall_s", "command",
                "network_estimates"):
        assert key in summary, key
    assert summary["queries"] == 30 and summary["generations"] == 5
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert {"loss", "best_loss", "bytes_total", "wall_s"} <= set(json.loads(lines[0]))
    assert "dev_metric" in json.loads(lines[4])
    assert "protocol:" in (tmp_path / "config.yaml").read_text()


@pytest.mark.slow
def test_rerun_in_the_same_directory_resumes_without_repeating_work(tmp_path):
    run(f"hydra.run.dir={tmp_path}", "budget=12")
    first = (tmp_path / "metrics.jsonl").read_text()
    run(f"hydra.run.dir={tmp_path}", "budget=12")
    assert (tmp_path / "metrics.jsonl").read_text() == first


@pytest.mark.slow
@pytest.mark.spu
def test_multirun_prints_one_table_for_all_protocols(tmp_path):
    out = run("-m", "protocol=plaintext,ref2k", "budget=6", f"hydra.sweep.dir={tmp_path}")
    table = (tmp_path / "summary.md").read_text()
    assert "| plaintext |" in table and "| ref2k |" in table
    assert table.splitlines()[0] in out.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("task=imdb", "Could not find 'task/imdb'"),
        ("protocol=spdz", "Could not find 'protocol/spdz'"),
        ("protocol.field=FM32", "unknown field 'FM32'; accepted: FM64, FM128"),
        ("optimizer.name=adam", "unknown optimizer 'adam'; accepted: cmaes, sepcmaes, zo"),
        ("budget=3", "budget 3 is smaller than one generation"),
    ],
)
def test_bad_input_names_the_value_and_the_accepted_ones(override, message, tmp_path):
    out = run(f"hydra.run.dir={tmp_path}", override, check=False)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr


def test_real_task_without_data_dir_is_a_clear_error(tmp_path, monkeypatch):
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("SECFWT_")}
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "task=mrpc",
           f"hydra.run.dir={tmp_path}", f"tokenizer={tmp_path / 'no-tokenizer'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env_free, timeout=300)
    assert out.returncode != 0 and "no-tokenizer" in out.stderr + out.stdout


@pytest.mark.slow
@pytest.mark.data
def test_mrpc_plaintext_runs_on_the_real_data(tmp_path):
    data, tok = SHARED / "data", SHARED / "tokenizer" / "roberta-base"
    if not (data / "mrpc").is_dir() or not tok.is_dir():
        pytest.skip(f"real data/tokenizer not found under {SHARED} (set SECFWT_SHARED)")
    run(f"hydra.run.dir={tmp_path}", "task=mrpc", f"data_dir={data}", f"tokenizer={tok}",
        "budget=12", "test_limit=16")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["task"] == "mrpc" and s["test_examples"] == 16 and s["train_examples"] == 32
    assert s["model_shape"]["vocab"] == 50265
    assert set(s["test_metrics"]) == {"f1", "accuracy"}


def test_the_named_layer_options_reach_the_model_owner():
    """`method.activation=gelu_even method.rfa_lean=true` (the named options of the leaner
    SecFwT query) go into what the model owner loads, and the model takes them."""
    import importlib.util

    from hydra import compose, initialize_config_dir

    from secfwt_jax.config import ModelConfig

    spec = importlib.util.spec_from_file_location("run_spec", ROOT / "experiments" / "run.py")
    run_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_py)
    with initialize_config_dir(config_dir=str(ROOT / "experiments" / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "method=secfwt", "method.activation=gelu_even", "method.rfa_lean=true"])
        default = compose(config_name="config", overrides=["method=secfwt"])
    overrides = run_py.model_spec(cfg)["overrides"]
    assert overrides["activation"] == "gelu_even" and overrides["rfa_lean"] is True
    assert run_py.model_spec(default)["overrides"]["rfa_lean"] is False
    config = ModelConfig.preset("tiny", **overrides)
    assert (config.activation, config.rfa_lean, config.attention) == ("gelu_even", True, "rfa")
