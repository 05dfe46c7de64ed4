"""Secret randomness comes from OS entropy, never from the run seed: the data owner's trig
masks are one-time across calls, a kill and resume, and runs with the same seed, while the
plaintext trajectory stays a function of the seed (issue 12)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from secfwt_jax.secure_trig import make_trig_masks, secret_uniform_bits

HERE = os.path.dirname(os.path.abspath(__file__))


def test_secret_uniform_bits_are_fresh_and_in_range():
    a, b = secret_uniform_bits((4000,), 24), secret_uniform_bits((4000,), 24)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 2**24
    assert not np.array_equal(a, b)
    # uniform: each of the 24 bits is set in about half of the draws (4000 draws: +-5 sigma)
    frac = ((a[:, None] >> np.arange(24)) & 1).mean(0)
    assert np.all(np.abs(frac - 0.5) < 5 * 0.5 / np.sqrt(4000))
    assert secret_uniform_bits((3,), 0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="bits must be in 0..62, got 63"):
        secret_uniform_bits((1,), 63)


def test_masks_without_rng_differ_and_a_seed_reproduces_only_on_request():
    a, b = make_trig_masks((64,)), make_trig_masks((64,))
    assert not np.array_equal(a["t"], b["t"])
    c, d = make_trig_masks((64,), rng=3), make_trig_masks((64,), rng=3)
    np.testing.assert_array_equal(c["t"], d["t"])  # seeded: test-only, documented as not secret


def test_the_evaluator_takes_no_mask_seed():
    import inspect

    from secfwt_jax.tuning.evaluator import PromptEvaluator

    assert "trig_seed" not in inspect.signature(PromptEvaluator).parameters


def test_spu_input_shares_are_fresh_per_sharing():
    """SPU splits inputs with its own randomness (not seeded by this project): the same value
    shared twice gives different shares."""
    pytest.importorskip("spu")
    from spu import api, libspu

    from secfwt_jax.backend.spu_backend import runtime_config

    io = api.Io(3, runtime_config("aby3", "FM64", 18))
    x = np.arange(16, dtype=np.float32)
    s1, s2 = (io.make_shares(x, libspu.Visibility.VIS_SECRET) for _ in range(2))
    assert [bytes(c) for c in s1[0].share_chunks] != [bytes(c) for c in s2[0].share_chunks]
    np.testing.assert_allclose(io.reconstruct(s1), x)


def _run(protocol, run_dir, out, stop_after=None):
    cmd = [sys.executable, os.path.join(HERE, "mask_run.py"), protocol, str(run_dir), str(out)]
    if stop_after is not None:
        cmd.append(str(stop_after))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
    subprocess.run(cmd, check=True, env=env, timeout=600, capture_output=True)
    return np.load(out)


@pytest.mark.slow
@pytest.mark.spu
def test_masks_are_one_time_across_kill_resume_and_runs_with_the_same_seed(tmp_path):
    """ABY3, method=secfwt, tiny: a run killed after one generation and resumed in a new
    process, plus a second run with the same seed. Every mask element the data owner drew in
    the three processes (t' * 2^f, 62-bit) is distinct; under a seeded generator the resumed
    process would replay the first process's masks and this would fail."""
    first = _run("aby3", tmp_path / "a", tmp_path / "first.npz", stop_after=1)
    resumed = _run("aby3", tmp_path / "a", tmp_path / "resumed.npz")
    other = _run("aby3", tmp_path / "b", tmp_path / "other.npz", stop_after=1)
    assert len(first["metrics"]) == 1 and len(resumed["metrics"]) == 2  # 8 / popsize 4
    masks = [first["masks"], resumed["masks"], other["masks"]]
    assert all(m.size > 0 for m in masks)
    everything = np.concatenate(masks)
    assert np.unique(everything).size == everything.size
    assert everything.max() < 2**62 and everything.min() >= 0


@pytest.mark.slow
def test_plaintext_trajectory_is_a_function_of_the_seed(tmp_path):
    """Two method=secfwt runs with the same seed in plaintext: the same losses, generation by
    generation (identity masks there; the trajectory depends on the seed only)."""
    a = _run("plaintext", tmp_path / "a", tmp_path / "a.npz")
    b = _run("plaintext", tmp_path / "b", tmp_path / "b.npz")
    assert len(a["metrics"]) == 2
    np.testing.assert_array_equal(a["metrics"], b["metrics"])
