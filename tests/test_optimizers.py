"""Gradient-free optimizers: CMA-ES against pycma, sep-CMA-ES, ZO-SGD, determinism, checkpoints.

Benchmarks: sphere, ellipsoid (condition 1e6) and Rosenbrock. Targets, the same for both
implementations: f < 1e-8 for sphere and ellipsoid (BBOB's final target) and f < 1e-6 for
Rosenbrock (this project's specification). Both start from the same x0 and sigma0 with the
default popsize 4 + floor(3 ln d); pycma runs in float64 with its defaults (active CMA on),
ours in float32. The comparisons at d >= 50 are marked slow (mostly pycma's own time).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from secfwt_jax.tuning import (
    CMAES,
    OPTIMIZERS,
    ZOSGD,
    CholeskyCMAES,
    CMAESParams,
    SepCMAES,
    load_state,
    make_optimizer,
    save_state,
)
from secfwt_jax.tuning.cholesky_cmaes import cholesky_factor, whiten

cma = pytest.importorskip("cma")

SEEDS = 5


def sphere(x):
    return jnp.sum(x**2, axis=-1)


def ellipsoid(x):
    d = x.shape[-1]
    return jnp.sum(10.0 ** (6.0 * jnp.arange(d) / (d - 1)) * x**2, axis=-1)


def rosenbrock(x):
    return jnp.sum(100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2, axis=-1)


def np_sphere(x):
    return float(np.sum(x**2))


def np_ellipsoid(x):
    d = len(x)
    return float(np.sum(10.0 ** (6.0 * np.arange(d) / (d - 1)) * x**2))


def np_rosenbrock(x):
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


# name: (jax f, numpy f, target, x0 value, sigma0)
PROBLEMS = {
    "sphere": (sphere, np_sphere, 1e-8, 1.0, 1.0),
    "ellipsoid": (ellipsoid, np_ellipsoid, 1e-8, 1.0, 1.0),
    "rosenbrock": (rosenbrock, np_rosenbrock, 1e-6, 0.0, 0.5),
}


def evals_to_target(opt, f, target, x0, seeds, max_generations):
    """Evaluations (popsize x generations) each seed needs to reach f < target; inf if not
    within max_generations. All seeds run at once: vmap over a jitted lax.while_loop."""

    def run(key):
        state = opt.init(key, x0)

        def cond(carry):
            state, done = carry
            return ~done & (state.generation < max_generations)

        def body(carry):
            state, _ = carry
            z, state = opt.ask(state)
            state = opt.tell(state, z, f(z))
            return state, state.best_f < target

        state, done = jax.lax.while_loop(cond, body, (state, jnp.array(False)))
        return state.generation, done

    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    gens, done = jax.jit(jax.vmap(run))(keys)
    evals = np.asarray(gens, np.float64) * opt.popsize
    return np.where(np.asarray(done), evals, np.inf)


def pycma_evals_to_target(f, target, x0, sigma0, seeds):
    counts = []
    for seed in range(1, seeds + 1):
        es = cma.CMAEvolutionStrategy(x0, sigma0, {"verbose": -9, "seed": seed})
        evals, best = 0, np.inf
        while best >= target and not es.stop():
            X = es.ask()
            F = [f(np.asarray(x)) for x in X]
            es.tell(X, F)
            evals += len(X)
            best = min(best, min(F))
        counts.append(evals if best < target else np.inf)
    return np.asarray(counts, np.float64)


slow = pytest.mark.slow
# opt-in: the two d=50 comparisons take ~2 min of CPU together (pycma's Python loop), which the
# CI suite's 15 minutes on 2 cores cannot hold; they pass (2026-11-30, both variants)
LONG = "SECFWT_LONG_TESTS"
long_only = pytest.mark.skipif(not os.environ.get(LONG), reason=f"a long test: set {LONG}=1 to "
                               "run it (pycma at d=50, about a minute)")


@pytest.mark.parametrize(
    "name,problem,dim",
    [
        ("cmaes", "sphere", 10),
        ("cmaes", "ellipsoid", 10),
        ("cmaes", "rosenbrock", 10),
        pytest.param("cmaes", "sphere", 50, marks=slow),
        pytest.param("cmaes", "ellipsoid", 50, marks=[slow, long_only]),
        pytest.param("cmaes", "rosenbrock", 50, marks=[slow, long_only]),
        # d=100: the first dimension here where B and D are updated lazily (every 2 tells)
        pytest.param("cmaes", "sphere", 100, marks=slow),
        # the Cholesky-factor variant (a named deviation) must search as well as pycma too
        ("cmaes_cholesky", "sphere", 10),
        pytest.param("cmaes_cholesky", "ellipsoid", 10, marks=slow),
        pytest.param("cmaes_cholesky", "rosenbrock", 10, marks=slow),
        # d=100: lazy refactorisation (every 2 tells)
        pytest.param("cmaes_cholesky", "sphere", 100, marks=slow),
        pytest.param("cmaes_cholesky", "ellipsoid", 50, marks=[slow, long_only]),
        pytest.param("cmaes_cholesky", "rosenbrock", 50, marks=[slow, long_only]),
    ],
)
def test_cmaes_needs_at_most_1_5x_pycma_median_evaluations(name, problem, dim):
    f, np_f, target, x0_value, sigma0 = PROBLEMS[problem]
    # pycma's counts spread by ~3% over seeds at d >= 50 (e.g. 90,690-94,395 on rosenbrock-50),
    # so 3 of its seeds give a steady median at 60% of its Python loop's time
    ref = pycma_evals_to_target(np_f, target, np.full(dim, x0_value), sigma0,
                                SEEDS if dim < 50 else 3)
    ref_median = np.median(ref)
    assert np.isfinite(ref_median), f"pycma itself failed: {ref}"
    opt = make_optimizer(name, dim=dim, sigma0=sigma0)
    assert opt.popsize == 4 + math.floor(3 * math.log(dim))
    # past 1.5x pycma's median a run has failed the criterion anyway: stop it there
    cap = math.ceil(1.5 * ref_median / opt.popsize)
    ours = evals_to_target(opt, f, target, jnp.full(dim, x0_value), SEEDS, cap)
    print(f"{name} {problem} d={dim}: ours {ours.tolist()} median {np.median(ours)}; "
          f"pycma {ref.tolist()} median {ref_median}")
    assert np.median(ours) <= 1.5 * ref_median


def test_cmaes_default_parameters_equal_pycmas():
    """Weights (active, eq. 53), mu_eff, c_1, c_mu, c_c agree with pycma to float64 rounding."""
    for dim in (3, 10, 50):
        es = cma.CMAEvolutionStrategy(np.ones(dim), 1.0, {"verbose": -9, "seed": 1})
        p = CMAESParams.default(dim)
        assert p.popsize == es.popsize
        np.testing.assert_allclose(p.weights, list(es.sp.weights), rtol=0, atol=1e-12)
        for ours, theirs in [
            (p.mu_eff, es.sp.weights.mueff),
            (p.c_1, es.sp.c1),
            (p.c_mu, es.sp.cmu),
            (p.c_c, es.sp.cc),
        ]:
            assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("dim,popsize", [(10, None), (100, None), (500, 20), (1000, 20)])
def test_cmaes_eigen_interval_is_pycmas_lazy_update_gap(dim, popsize):
    """pycma decomposes C once lazy_update_gap = 1 / ((c_1 + c_mu) n 10) tells have passed."""
    opts = {"verbose": -9, "seed": 1} | ({} if popsize is None else {"popsize": popsize})
    es = cma.CMAEvolutionStrategy(np.ones(dim), 1.0, opts)
    interval = CMAESParams.default(dim, popsize).eigen_interval
    assert interval == max(1, math.ceil(es.sm.lazy_update_gap))
    if dim >= 100:
        assert interval > 1


def test_lazy_cmaes_decomposes_every_interval_and_keeps_b_d_in_between():
    opt = make_optimizer("cmaes", dim=12, eigen_interval=3)
    state = opt.init(jax.random.PRNGKey(5), jnp.ones(12))
    state6 = run_generations(opt, state, rosenbrock, 6)
    assert int(state6.eigen_generation) == 6
    # B, D are the decomposition of the C of generation 6 ...
    rebuilt = (state6.B * state6.D**2) @ state6.B.T
    scale = float(state6.D.max()) ** 2
    np.testing.assert_allclose(rebuilt, state6.C, rtol=1e-4, atol=1e-5 * scale)
    # ... and stay so for two more tells while C moves on; the third decomposes again
    state8 = run_generations(opt, state6, rosenbrock, 2)
    assert int(state8.eigen_generation) == 6
    assert_same_tree((state8.B, state8.D), (state6.B, state6.D))
    assert not np.array_equal(np.asarray(state8.C), np.asarray(state6.C))
    state9 = run_generations(opt, state8, rosenbrock, 1)
    assert int(state9.eigen_generation) == 9
    assert not np.array_equal(np.asarray(state9.B), np.asarray(state6.B))


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_eigen_interval_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="eigen_interval"):
        make_optimizer("cmaes", dim=4, eigen_interval=bad)


@pytest.mark.parametrize("problem,budget", [("sphere", 8_000), ("ellipsoid", 20_000)])
def test_sepcmaes_solves_d50(problem, budget):
    f, _, target, x0_value, sigma0 = PROBLEMS[problem]
    opt = make_optimizer("sepcmaes", dim=50, sigma0=sigma0)
    evals = evals_to_target(opt, f, target, jnp.full(50, x0_value), 3, budget // opt.popsize)
    assert np.all(evals <= budget), evals


def test_sepcmaes_learning_rates_are_ros_hansen_scaled():
    full, sep = CMAESParams.default(50), CMAESParams.default(50, separable=True)
    assert sep.c_1 == pytest.approx(full.c_1 * 52 / 3)
    assert sep.c_mu == pytest.approx(full.c_mu * 52 / 3)


def run_generations(opt, state, f, generations):
    ask, tell = jax.jit(opt.ask), jax.jit(opt.tell)
    for _ in range(generations):
        z, state = ask(state)
        state = tell(state, z, f(z))
    return state


def quadratic(x):
    return jnp.sum(jnp.linspace(1.0, 4.0, x.shape[-1]) * (x - 0.5) ** 2, axis=-1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_zo_decreases_a_quadratic(optimizer):
    opt = make_optimizer("zo", dim=20, popsize=8, sigma0=1e-2, optimizer=optimizer,
                         learning_rate=0.05)
    x0 = jnp.zeros(20)
    state = run_generations(opt, opt.init(jax.random.PRNGKey(1), x0), quadratic, 200)
    assert quadratic(state.mean) < 0.01 * quadratic(x0)


def test_zo_gradient_estimate_points_along_the_gradient():
    """Central differences are exact on a quadratic; with many directions E[u u^T] = I."""
    opt = make_optimizer("zo", dim=10, popsize=4000, sigma0=1e-2)
    x0 = jnp.linspace(-1.0, 1.0, 10)
    state = opt.init(jax.random.PRNGKey(2), x0)
    z, state = opt.ask(state)
    state = opt.tell(state, z, quadratic(z))
    true = jax.grad(quadratic)(x0)
    cosine = jnp.dot(state.grad, true) / (jnp.linalg.norm(state.grad) * jnp.linalg.norm(true))
    assert cosine > 0.99
    assert jnp.linalg.norm(state.grad) == pytest.approx(float(jnp.linalg.norm(true)), rel=0.1)


def test_zo_asks_antithetic_pairs():
    opt = make_optimizer("zo", dim=6, popsize=4, sigma0=0.1)
    x0 = jnp.arange(6.0)
    z, _ = opt.ask(opt.init(jax.random.PRNGKey(0), x0))
    np.testing.assert_allclose((z[:2] + z[2:]) / 2, jnp.stack([x0, x0]), atol=1e-6)


def assert_same_tree(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_identical_seeds_give_identical_states(name):
    opt = make_optimizer(name, dim=12)
    runs = [
        run_generations(opt, opt.init(jax.random.PRNGKey(7), jnp.ones(12)), rosenbrock, 15)
        for _ in range(2)
    ]
    assert_same_tree(*runs)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_different_seeds_ask_different_candidates(name):
    opt = make_optimizer(name, dim=12)
    z1, _ = opt.ask(opt.init(jax.random.PRNGKey(1), jnp.ones(12)))
    z2, _ = opt.ask(opt.init(jax.random.PRNGKey(2), jnp.ones(12)))
    assert not np.array_equal(np.asarray(z1), np.asarray(z2))


@pytest.mark.parametrize(
    "name,kw",
    [("cmaes", {}), ("cmaes", {"eigen_interval": 3}), ("sepcmaes", {}),
     ("zo", {"optimizer": "adam"}), ("cmaes_cholesky", {"eigen_interval": 3})],
)
def test_save_restore_continues_exactly_like_an_uninterrupted_run(tmp_path, name, kw):
    opt = make_optimizer(name, dim=12, **kw)
    init = opt.init(jax.random.PRNGKey(3), jnp.ones(12))
    straight = run_generations(opt, init, rosenbrock, 20)

    half = run_generations(opt, init, rosenbrock, 10)
    save_state(tmp_path / "state.npz", half)
    template = opt.init(jax.random.PRNGKey(99), jnp.zeros(12))
    restored = load_state(tmp_path / "state.npz", like=template)
    assert_same_tree(restored, half)
    resumed = run_generations(opt, restored, rosenbrock, 10)
    assert_same_tree(resumed, straight)


def test_load_state_rejects_a_template_of_another_shape(tmp_path):
    opt = make_optimizer("cmaes", dim=4)
    save_state(tmp_path / "s.npz", opt.init(jax.random.PRNGKey(0), jnp.ones(4)))
    other = make_optimizer("cmaes", dim=5)
    with pytest.raises(ValueError, match="shape"):
        load_state(tmp_path / "s.npz", like=other.init(jax.random.PRNGKey(0), jnp.ones(5)))


def test_load_state_rejects_a_template_of_another_optimizer(tmp_path):
    cmaes, zo = make_optimizer("cmaes", dim=4), make_optimizer("zo", dim=4)
    save_state(tmp_path / "s.npz", cmaes.init(jax.random.PRNGKey(0), jnp.ones(4)))
    with pytest.raises(ValueError, match="leaves"):
        load_state(tmp_path / "s.npz", like=zo.init(jax.random.PRNGKey(0), jnp.ones(4)))


def test_make_optimizer_rejects_unknown_names_listing_the_accepted():
    with pytest.raises(ValueError, match="'nes'.*cmaes, sepcmaes, zo, cmaes_cholesky"):
        make_optimizer("nes", dim=4)


def test_make_optimizer_builds_each_class():
    assert isinstance(make_optimizer("cmaes", dim=4), CMAES)
    assert isinstance(make_optimizer("sepcmaes", dim=4), SepCMAES)
    assert isinstance(make_optimizer("zo", dim=4), ZOSGD)
    assert isinstance(make_optimizer("cmaes_cholesky", dim=4), CholeskyCMAES)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"popsize": 7}, "even"),
        ({"optimizer": "lbfgs"}, "'lbfgs'.*sgd, adam, adamw"),
        ({"direction": "sobol"}, "'sobol'.*gaussian, rademacher"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
    ],
)
def test_zo_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer("zo", dim=4, **kw)


def test_cmaes_rejects_nonpositive_sigma0_and_tiny_popsize():
    with pytest.raises(ValueError, match="sigma0"):
        make_optimizer("cmaes", dim=4, sigma0=0.0)
    with pytest.raises(ValueError, match="popsize"):
        make_optimizer("cmaes", dim=4, popsize=1)


def test_sepcmaes_refuses_full_cmaes_parameters():
    with pytest.raises(ValueError, match="separable"):
        SepCMAES(CMAESParams.default(4))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_init_and_tell_reject_wrong_shapes(name):
    opt = make_optimizer(name, dim=4)
    with pytest.raises(ValueError, match="x0"):
        opt.init(jax.random.PRNGKey(0), jnp.ones(5))
    state = opt.init(jax.random.PRNGKey(0), jnp.ones(4))
    z, state = opt.ask(state)
    with pytest.raises(ValueError, match="fitness"):
        opt.tell(state, z, jnp.ones(opt.popsize + 1))


def test_init_rejects_an_int_seed():
    with pytest.raises(TypeError, match="PRNG key"):
        make_optimizer("cmaes", dim=4).init(0, jnp.ones(4))


@pytest.mark.parametrize("name", ["cmaes", "sepcmaes", "cmaes_cholesky"])
def test_nan_fitness_ranks_worst(name):
    opt = make_optimizer(name, dim=6)
    state = opt.init(jax.random.PRNGKey(0), jnp.ones(6))
    z, state = opt.ask(state)
    fitness = sphere(z).at[0].set(jnp.nan)
    state = jax.jit(opt.tell)(state, z, fitness)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(state))
    assert float(state.best_f) == float(jnp.min(fitness[1:]))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_exposes_the_common_fields(name):
    opt = make_optimizer(name, dim=4)
    state = run_generations(opt, opt.init(jax.random.PRNGKey(0), jnp.ones(4)), sphere, 3)
    assert state.mean.shape == (4,) and state.mean.dtype == jnp.float32
    assert state.best_x.shape == (4,) and state.best_f.shape == ()
    assert int(state.generation) == 3
    assert float(sphere(state.best_x)) == pytest.approx(float(state.best_f), rel=1e-6)


def test_cmaes_keeps_covariance_symmetric_positive_definite():
    opt = make_optimizer("cmaes", dim=10)
    state = run_generations(opt, opt.init(jax.random.PRNGKey(0), jnp.ones(10)), ellipsoid, 60)
    np.testing.assert_array_equal(np.asarray(state.C), np.asarray(state.C).T)
    assert float(jnp.min(state.D)) > 0
    scale = float(state.D.max()) ** 2
    rebuilt = (state.B * state.D**2) @ state.B.T
    np.testing.assert_allclose(rebuilt, state.C, rtol=1e-4, atol=1e-5 * scale)


def test_cholesky_cmaes_factor_is_a_square_root_of_the_covariance():
    opt = make_optimizer("cmaes_cholesky", dim=10, eigen_interval=4)
    state = run_generations(opt, opt.init(jax.random.PRNGKey(0), jnp.ones(10)), ellipsoid, 60)
    C, A = np.asarray(state.C, np.float64), np.asarray(state.A, np.float64)
    assert int(state.eigen_generation) == 60  # factored in the last tell
    np.testing.assert_array_equal(C, C.T)
    np.testing.assert_array_equal(A, np.tril(A))
    np.testing.assert_allclose(A @ A.T, C, rtol=1e-4, atol=1e-5 * float(np.abs(C).max()))
    y = np.random.default_rng(0).normal(size=(3, 10))
    np.testing.assert_allclose(np.asarray(whiten(state.A, jnp.asarray(y, jnp.float32))),
                               np.linalg.solve(A, y.T).T, rtol=1e-3, atol=1e-3)
    z, asked = opt.ask(state)
    later = jax.jit(opt.tell)(asked, z, ellipsoid(z))
    assert int(later.eigen_generation) == 60  # C moved on, A stays until generation 64
    np.testing.assert_array_equal(np.asarray(later.A), np.asarray(state.A))
    assert not np.allclose(np.asarray(later.C), C)


def test_cholesky_cmaes_whitens_asked_candidates_with_their_draws_as_a_solve_would():
    """tell takes ask's draws u for A^{-1} y when told the asked candidates, and solves with A
    otherwise (here: the same candidates with the kept copy cleared): the same state to float32
    rounding, on a C far from I."""
    opt = make_optimizer("cmaes_cholesky", dim=12, eigen_interval=5)
    state = run_generations(opt, opt.init(jax.random.PRNGKey(3), jnp.ones(12)), ellipsoid, 40)
    z, asked = opt.ask(state)
    np.testing.assert_array_equal(np.asarray(asked.asked), np.asarray(z))
    tell = jax.jit(opt.tell)
    drawn = tell(asked, z, ellipsoid(z))
    solved = tell(asked.replace(asked=jnp.zeros_like(z)), z, ellipsoid(z))
    for name in ("mean", "sigma", "C", "p_sigma", "p_c"):
        a, b = np.asarray(getattr(drawn, name)), np.asarray(getattr(solved, name))
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6 * float(np.abs(b).max()),
                                   err_msg=name)
    assert not np.array_equal(np.asarray(drawn.p_sigma), np.asarray(solved.p_sigma))  # 2 paths


def test_cholesky_factor_repairs_an_indefinite_covariance():
    """A C with a negative eigenvalue (float32 noise in an ill-conditioned C) is rebuilt
    positive definite, and its factor squares to the rebuilt C."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
    C = (q * np.array([4.0, 2.0, 1.0, 0.5, 0.1, -1e-3])) @ q.T
    C_fixed, A = (np.asarray(x, np.float64)
                  for x in cholesky_factor(jnp.asarray(C, jnp.float32), 1e-14))
    assert np.all(np.isfinite(A)) and np.linalg.eigvalsh(C_fixed).min() > 0
    np.testing.assert_allclose(A @ A.T, C_fixed, atol=1e-5)
    np.testing.assert_allclose(C_fixed, C, atol=2e-3)  # only the bad eigenvalue moved
