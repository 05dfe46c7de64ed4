"""Issue 13, runs you can trust: every record true, every resume the same run, every bad value
refused before work starts. Runs `experiments/run.py`'s launch() in-process through Hydra's
compose (tiny model, planted task, a few generations); the session's compilation cache
(conftest.py) makes every launch after the first take seconds, not tens of seconds."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from secfwt_jax.tuning.loop import NonFiniteLossError, SteadyEta, Tuner, TuningConfig
from secfwt_jax.tuning.records import RunDirError

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONF = str(ROOT / "experiments" / "conf")
sys.path.insert(0, str(ROOT / "experiments"))  # the scripts' toolkit, experiments/common.py


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_py = _load("run")
callbacks = _load("callbacks")


def cfg_of(*overrides, choices=None):
    """The composed config (as run.py's main gets it); Hydra's group choices into `choices`."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="config", overrides=["progress=false", *overrides],
                      return_hydra_config=True)
    if choices is not None:
        choices.update({g: cfg.hydra.runtime.choices[g] for g in run_py.GROUPS})
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def launch(run_dir, *overrides):
    choices = {}
    cfg = cfg_of(*overrides, choices=choices)
    return run_py.launch(cfg, str(run_dir), choices)


def snapshot(d: pathlib.Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- 1. a resume accepts only the same run ---------------------------------------------------

@pytest.mark.slow  # over 5 s (README: the fast lane's rule)
def test_resume_with_a_different_run_is_refused_before_anything_changes(tmp_path):
    launch(tmp_path, "budget=18", "checkpoint_every=1")
    before = snapshot(tmp_path)
    assert "fingerprint.json" in before
    for override, key in (("task.n_train=8", "task.n_train"), ("seed=3", "seed: 1 -> 3"),
                          ("optimizer.popsize=4", "optimizer.popsize: 6 -> 4"),
                          ("intrinsic_dim=5", "intrinsic_dim: 4 -> 5"),
                          ("optimizer=sepcmaes", "optimizer.name: 'cmaes' -> 'sepcmaes'")):
        with pytest.raises(RunDirError, match="holds a different run") as e:
            launch(tmp_path, "budget=18", "checkpoint_every=1", override)
        assert key in str(e.value)
        assert snapshot(tmp_path) == before  # config.yaml, metrics, checkpoint untouched


def test_fingerprint_holds_what_determines_the_trajectory():
    fp = run_py.fingerprint(cfg_of("budget=18"))
    for key in ("task", "model", "method", "protocol", "optimizer", "seed", "budget",
                "intrinsic_dim", "prompt_len", "prompt_mode", "projection", "loss", "reveal"):
        assert key in fp, key
    assert fp["optimizer"] == {"name": "cmaes", "popsize": 6, "sigma0": 1.0}
    assert "checkpoint_every" not in fp and "progress" not in fp


def test_fingerprint_of_a_real_task_holds_its_data_files_hashes(tmp_path):
    kshot = tmp_path / "sst2" / "k-shot" / "16-13"
    kshot.mkdir(parents=True)
    (kshot / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (kshot / "dev.tsv").write_text("sentence\tlabel\nbad\t0\n")
    fp = run_py.fingerprint(cfg_of("task=sst2", f"data_dir={tmp_path}"))
    import hashlib

    want = hashlib.sha256(b"sentence\tlabel\ngood\t1\n").hexdigest()
    assert fp["data_files"]["train"] == want and fp["data_files"]["test"] == "missing"


@pytest.mark.slow
def test_budget_may_be_raised_to_continue_a_finished_run_and_that_is_recorded(tmp_path):
    launch(tmp_path, "budget=12")
    s = launch(tmp_path, "budget=24")
    assert s["generations"] == 4 and s["budgets"] == [12, 24]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [1, 2, 3, 4]
    record = json.loads((tmp_path / "fingerprint.json").read_text())
    assert record["budgets"] == [12, 24] and record["fingerprint"]["budget"] == 24
    with pytest.raises(RunDirError, match="may only keep or raise the budget"):
        launch(tmp_path, "budget=12")


# -- 2. resume=false in an existing run directory ------------------------------------------

def test_resume_false_in_a_directory_holding_a_run_is_refused(tmp_path):
    launch(tmp_path, "budget=12")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run .* and resume=false"):
        launch(tmp_path, "budget=12", "resume=false")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_resume_without_a_checkpoint_starts_metrics_afresh(tmp_path):
    # killed before its first checkpoint: the old lines are dropped, not appended to
    launch(tmp_path, "budget=12", "checkpoint_every=0")
    assert not (tmp_path / "checkpoint").exists()
    launch(tmp_path, "budget=12", "checkpoint_every=0")
    gens = [json.loads(x)["generation"] for x in open(tmp_path / "metrics.jsonl")]
    assert gens == [1, 2]


# -- 3. every setting checked before work; a late failure keeps the results ---------------

def test_bad_network_name_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown network 'nosuch'; accepted: lan, wan100"):
        launch(tmp_path, "network.name=nosuch")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_failure_after_tuning_still_writes_the_summary(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("network model broke")

    monkeypatch.setattr(run_py, "estimate_time", broken)
    with pytest.raises(RuntimeError, match="network model broke"):
        launch(tmp_path, "budget=12")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["error"] == "RuntimeError: network model broke"
    assert s["generations"] == 2 and np.isfinite(s["final_loss"]) and "test_metric" in s
    assert (tmp_path / "best_prompt_z.json").exists()


# -- 4. non-finite numbers -----------------------------------------------------------------

def test_nan_weights_in_a_checkpoint_are_an_error_naming_the_tensor(tmp_path):
    from safetensors.numpy import save_file

    from secfwt_jax import ModelConfig, init_params
    from secfwt_jax.loading import load_pretrained

    ckpt = _tiny_checkpoint(tmp_path, ModelConfig, init_params, save_file)
    state = dict(np.load(tmp_path / "state.npz"))
    state["roberta.encoder.layer.1.output.dense.weight"][0, 3] = np.nan
    state["lm_head.bias"][2] = np.inf
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        load_pretrained(str(ckpt))
    assert "NaN or Inf in tensors: lm_head.bias (1 of 1000 values), " \
        "roberta.encoder.layer.1.output.dense.weight (1 of 2048 values)" in str(e.value)


def _tiny_checkpoint(tmp_path, ModelConfig, init_params, save_file):
    """A Hugging Face-named checkpoint folder of the tiny preset (also kept as state.npz)."""
    from secfwt_jax.loading import hf_param_names

    config = ModelConfig.preset("tiny")
    params = init_params(config, seed=0)
    state = {}
    for name, (path, transpose) in hf_param_names(config).items():
        v = params
        for p in path:
            v = v[p]
        v = np.asarray(v, np.float32)
        state[name] = np.ascontiguousarray(v.T if transpose else v)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(state, str(ckpt / "model.safetensors"))
    np.savez(tmp_path / "state.npz", **state)
    hf = dict(model_type="roberta", vocab_size=config.vocab_size, hidden_size=config.hidden_size,
              num_hidden_layers=config.num_hidden_layers,
              num_attention_heads=config.num_attention_heads,
              intermediate_size=config.intermediate_size,
              max_position_embeddings=config.max_position_embeddings,
              pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
              eos_token_id=config.eos_token_id)
    (ckpt / "config.json").write_text(json.dumps(hf))
    return ckpt


class _NaNEvaluator:
    """Wraps an evaluator: candidate 2's logits are NaN from generation 3 on."""

    def __init__(self, ev):
        self.ev, self.calls = ev, 0

    def __getattr__(self, name):
        return getattr(self.ev, name)

    def losses(self, examples, prompts):
        self.calls += 1
        losses, logits = self.ev.losses(examples, prompts)
        if self.calls >= 3:
            logits = np.array(logits)
            logits[2, 0, 0] = np.nan
            losses = np.array(losses)
            losses[2] = np.nan
        return losses, logits


def test_non_finite_loss_stops_the_run_naming_generation_and_candidate(tmp_path):
    from secfwt_jax import ModelConfig, init_params
    from secfwt_jax.backend import make_backend
    from secfwt_jax.tasks.planted import make_planted
    from secfwt_jax.tuning.loop import tuning_projection

    cfg = ModelConfig.preset("tiny", initializer_range=0.3)
    tcfg = TuningConfig(popsize=6, intrinsic_dim=4, prompt_len=4, budget=60, eval_every=5,
                        checkpoint_every=1, seed=1)
    params = init_params(cfg, seed=0)
    task = make_planted(cfg, params, np.asarray(tuning_projection(tcfg, cfg, params)),
                        prompt_len=4, n_train=16, n_dev=16, n_test=32, seq_len=10,
                        teacher_scale=3.0, prompt_mode=tcfg.prompt_mode, seed=1)
    tuner = Tuner(tcfg, make_backend("plaintext"), cfg, params, task.label_word_ids,
                  run_dir=str(tmp_path), progress=False)
    tuner.evaluator = _NaNEvaluator(tuner.evaluator)
    with pytest.raises(NonFiniteLossError,
                       match=r"generation 3: non-finite loss or logits for candidate\(s\) \[2\] "
                             r"of 6 .* checkpoint of generation 2"):
        tuner.run(task.train, task.dev, task.test)
    assert json.loads((tmp_path / "checkpoint" / "loop.json").read_text())["generation"] == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


# -- 5. no key the run does not use ----------------------------------------------------------

def test_a_key_nothing_reads_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key\(s\) task.label_words: no part "
                                         r"of the run reads them"):
        launch(tmp_path, "+task.label_words=[wonderfully,terribly]")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) learning_rate"):
        launch(tmp_path, "+learning_rate=0.1")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_every_tuning_config_field_is_read_from_its_config_key():
    import dataclasses

    cfg = cfg_of("optimizer=sepcmaes", "optimizer.popsize=4", "optimizer.sigma0=2",
                 "temperature=0.1", "vocab_bucket=0", "head=similarity", "prompt_mode=cat")
    tcfg = run_py.tuning_config(cfg)
    groups = {"optimizer": cfg.optimizer.name, "popsize": 4, "sigma0": 2.0}
    for field in dataclasses.fields(tcfg):
        want = groups.get(field.name, cfg.get(field.name))
        assert getattr(tcfg, field.name) == want, field.name
    assert tcfg.optimizer == "sepcmaes" and isinstance(tcfg.sigma0, float)
    with pytest.raises(ValueError, match="optimizer.popsize must be an integer >= 1, got 0"):
        run_py.tuning_config(cfg_of("optimizer.popsize=0"))


# -- 6. truncation is counted and warned about ---------------------------------------------

def test_truncation_is_counted_per_split_and_warned(tmp_path, capsys):
    from secfwt_jax.tasks.encode import Batch

    def batch(flags):
        n = len(flags)
        return Batch(np.zeros((n, 4), np.int32), np.ones((n, 4), np.int32),
                     np.zeros((n, 4), np.float32), np.zeros(n, np.int32), np.array(flags))

    splits = dict(train=batch([True, False]), dev=batch([False]), test=batch([True, True, True]))
    with pytest.warns(UserWarning, match="task.max_len=8 .* truncated examples: train 1 of 2, "
                                         "dev 0 of 1, test 3 of 3"):
        run_py.warn_truncated(splits, {}, 8)
    assert "WARNING: task.max_len=8" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="task.max_len=8 .* left out examples: train 2 of 4, "
                                         "dev 0 of 1, test 0 of 3"):
        run_py.warn_truncated(splits, {"train": 2, "dev": 0, "test": 0}, 8)
    assert run_py.truncated_counts(*splits.values()) == {"train": 1, "dev": 0, "test": 3}
    s = launch(tmp_path, "budget=6")  # the planted task truncates nothing, and says so
    assert s["truncated"] == {"train": 0, "dev": 0, "test": 0}


def test_the_similarity_head_refuses_the_add_modes_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"head=similarity takes prompt_mode cat, cat_pre_ln .*"
                                         r"got 'add'"):
        launch(tmp_path, "head=similarity", "prompt_mode=add")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# -- 7. values that were reinterpreted or crashed ------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("checkpoint_every=-1", "checkpoint_every must be an integer >= 0, got -1"),
    ("test_limit=0", "test_limit must be an integer >= 1 or null, got 0"),
    ("seed=abc", "seed must be an integer >= 0, got 'abc'"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("intrinsic_dim=0", "intrinsic_dim must be an integer >= 1, got 0"),
    ("task.seq_len=0", "task.seq_len must be an integer >= 4, got 0"),
    ("task.num_labels=1", "task.num_labels must be an integer >= 2, got 1"),
    ("optimizer.sigma0=0", "optimizer.sigma0 must be a finite number > 0, got 0"),
    ("protocol.mode=threads", "unknown protocol.mode 'threads'; accepted: sim, mp"),
])
def test_bad_values_name_the_key_the_value_and_what_is_accepted(override, message, tmp_path):
    with pytest.raises(ValueError) as e:
        launch(tmp_path, override)
    assert message in str(e.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_planted_generator_refuses_degenerate_shapes():
    from secfwt_jax import ModelConfig, init_params
    from secfwt_jax.tasks.planted import make_planted

    cfg = ModelConfig.preset("tiny")
    params = init_params(cfg, seed=0)
    A = np.zeros((4, 4 * cfg.hidden_size), np.float32)
    with pytest.raises(ValueError, match="planted task: seq_len must be an integer >= 4, got 0"):
        make_planted(cfg, params, A, prompt_len=4, seq_len=0)
    with pytest.raises(ValueError, match="planted task: num_labels must be an integer >= 2, got 1"):
        make_planted(cfg, params, A, prompt_len=4, num_labels=1)


def test_header_only_tsv_is_an_error_naming_the_file(tmp_path):
    from secfwt_jax.tasks import load_split

    kshot = tmp_path / "sst2" / "k-shot" / "16-13"
    kshot.mkdir(parents=True)
    (kshot / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ValueError, match=r"train.tsv: a header row and no examples"):
        load_split("sst2", tmp_path, "train")


def test_broken_checkpoint_files_are_errors_naming_the_file(tmp_path):
    from safetensors.numpy import save_file

    from secfwt_jax import ModelConfig, init_params
    from secfwt_jax.loading import load_pretrained

    ckpt = _tiny_checkpoint(tmp_path, ModelConfig, init_params, save_file)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match=f"{weights}: not a readable safetensors file"):
        load_pretrained(str(ckpt))
    weights.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=f"{weights}: not a readable safetensors file"):
        load_pretrained(str(ckpt))
    (ckpt / "config.json").write_text('{"hidden_size": 32,')
    with pytest.raises(ValueError, match=f"{ckpt / 'config.json'}: not valid JSON"):
        load_pretrained(str(ckpt))
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object"):
        load_pretrained(str(ckpt))


# -- 8. advertised settings that cannot run ------------------------------------------------

def test_masked_trig_on_plaintext_fxp_is_refused_saying_what_to_use(tmp_path):
    with pytest.raises(ValueError, match="method 'secfwt' .* cannot run on protocol=plaintext_fxp"
                                         ".* use protocol=plaintext"):
        launch(tmp_path, "method=secfwt", "protocol=plaintext_fxp")


@pytest.mark.slow  # over 5 s (README: the fast lane's rule)
def test_secfwt_on_planted_runs_at_the_defaults(tmp_path):
    # with BBT's add mode (the prompt after the LayerNorm) a planted teacher exists for secfwt
    s = launch(tmp_path, "method=secfwt", "budget=6")
    assert s["attention"] == "rfa" and s["rfa_trig"] == "masked" and s["generations"] == 1


@pytest.mark.slow
def test_secfwt_on_planted_with_the_suggested_settings_runs(tmp_path):
    s = launch(tmp_path, "method=secfwt", "budget=6", "method.normalize_qk=false",
               "model.initializer_range=0.15")
    assert s["attention"] == "rfa" and s["rfa_trig"] == "masked" and s["generations"] == 1


# -- 9. multirun with a failed job -----------------------------------------------------------

def test_multirun_table_lists_finished_and_failed_jobs(tmp_path):
    ok = tmp_path / "0_plaintext_cmaes"
    launch(ok, "budget=6")
    bad = tmp_path / "1_plaintext_cmaes"
    bad.mkdir()
    (bad / "error.json").write_text(json.dumps(dict(
        error="ValueError: unknown network 'nosuch'; accepted: lan, wan100, wan200",
        overrides=["network.name=nosuch"])))
    table = callbacks.summary_table(str(tmp_path))
    assert "| plaintext | cmaes | fot_puma | planted | tiny | 6 |" in table
    assert ("Failed jobs (1):\n- 1_plaintext_cmaes (network.name=nosuch): ValueError: unknown "
            "network 'nosuch'") in table


@pytest.mark.slow
def test_multirun_with_a_failing_job_prints_the_table_and_exits_non_zero(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "-m", "network.name=lan,nosuch",
           "budget=6", f"hydra.sweep.dir={tmp_path}", "progress=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1
    assert "| plaintext | cmaes |" in out.stdout and "Failed jobs (1):" in out.stdout
    assert "1 multirun job(s) failed: 1_plaintext_cmaes" in out.stderr


# -- 10. the ETA leaves out the first (compiling) step -------------------------------------

def test_eta_is_computed_from_steady_state_steps():
    times = iter([0.0, 100.0, 101.0, 103.0])  # start, a 100 s compile step, then 1 s and 2 s
    eta = SteadyEta(clock=lambda: next(times))
    eta.step()
    assert eta.seconds(10) is None and eta.text(10) == "?"
    eta.step()
    eta.step()
    assert eta.seconds(10) == pytest.approx(15.0)  # 10 x mean(1, 2), not 10 x mean(100, 1, 2)
    assert eta.text(10) == "0:00:15"


# -- secure results that are silently wrong (bench_forward) --------------------------------

def _bench():
    """experiments/bench_forward.py as a module (importing it registers its structured config
    with Hydra; it imports the scripts' toolkit, experiments/common.py)."""
    if str(ROOT / "experiments") not in sys.path:
        sys.path.insert(0, str(ROOT / "experiments"))
    return importlib.import_module("bench_forward")


def _bench_cfg(*overrides):
    _bench()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="bench_forward", overrides=list(overrides))


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ref2k", pytest.param("aby3", marks=pytest.mark.slow)])
@pytest.mark.spu
def test_bench_forward_default_rfa_is_correct_and_out_of_range_is_marked_wrong(protocol):
    bench = _bench()
    base = ("attention=rfa", f"protocols=[{protocol}]")
    ok = bench.run(_bench_cfg(*base))[0]  # the default: normalize_qk=true
    assert ok["setting"]["normalize_qk"] is True and "wrong" not in ok
    assert ok["measured"]["max_abs_err"] <= 0.05
    bad = bench.run(_bench_cfg(*base, "normalize_qk=false"))[0]  # keys overflow FM64
    assert bad["measured"]["max_abs_err"] > 0.05
    assert bad["wrong"].startswith("secure output differs from plaintext by ")
    assert "WRONG" in bench.markdown([ok, bad]).splitlines()[3]


def test_secure_rfa_without_normalised_qk_is_flagged_in_the_summary():
    assert run_py.range_warning(cfg_of("method=secfwt", "protocol=aby3")) is None
    assert run_py.range_warning(cfg_of("method=secfwt", "method.normalize_qk=false")) is None
    w = run_py.range_warning(cfg_of("method=secfwt", "method.normalize_qk=false",
                                    "protocol=aby3"))
    assert w.startswith("attention=rfa with normalize_qk=false on protocol=aby3: ")


def test_unreadable_fingerprint_or_missing_one_refuses_the_resume(tmp_path):
    from secfwt_jax.tuning.records import prepare_run_dir

    fp = {"seed": 1, "budget": 12}
    assert prepare_run_dir(str(tmp_path), fp, resume=True)["budgets"] == [12]  # empty: fresh
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunDirError, match="holds metrics.jsonl but no fingerprint.json"):
        prepare_run_dir(str(tmp_path), fp, resume=True)
    (tmp_path / "fingerprint.json").write_text("{")
    with pytest.raises(RunDirError, match="fingerprint.json is unreadable"):
        prepare_run_dir(str(tmp_path), fp, resume=True)


@pytest.mark.data
def test_real_task_truncation_is_counted_in_the_summary(tmp_path, capsys):
    shared = pathlib.Path(os.environ.get("SECFWT_SHARED", ROOT.parent / "shared"))
    data, tok = shared / "data", shared / "tokenizer" / "roberta-base"
    if not (data / "sst2").is_dir() or not tok.is_dir():
        pytest.skip(f"real data/tokenizer not found under {shared} (set SECFWT_SHARED)")
    s = launch(tmp_path, "task=sst2", f"data_dir={data}", f"tokenizer={tok}", "task.max_len=16",
               "overlong=truncate", "test_limit=16", "budget=6")
    assert s["truncated"]["test"] > 0 and s["truncated"]["train"] > 0
    assert set(s["truncated"]) == {"train", "dev", "test"}
    assert "WARNING: task.max_len=16 (or the model's positions) truncated examples: train " in (
        capsys.readouterr().err)
