"""Shared test setup.

One persistent XLA compilation cache per test session (per pytest-xdist worker): the tests
compile the same small programs (the tiny model's forward, the optimizer's ask/tell) in many
modules and in the `experiments/run.py` processes they start, which inherit the cache through
JAX_* environment variables. A cached executable is the program XLA compiled before, so results
are unchanged; only compile time is saved.

The `spu` marker: a test that needs SecretFlow SPU (an SPU protocol, spu's own API) carries
`@pytest.mark.spu` and is skipped, with the reason, where spu is not installed (spu 0.9.5 has
wheels for Python 3.10/3.11 only; the plaintext path must run without it). Tests that need spu
for a whole module may instead call `pytest.importorskip("spu")` at its top.

experiments/ is put on sys.path, as `python experiments/x.py` has it, so that tests may load
a script (spec_from_file_location) whose `import common` finds the experiments' toolkit.

One BLAS thread per test process (OPENBLAS/OMP/MKL_NUM_THREADS, unless already set), inherited by
the processes the tests start: CI runs two pytest-xdist workers on two cores, and OpenBLAS's
threads (numpy's, pycma's, the LAPACK behind jax's CPU linalg) spin while they wait, so two
workers' threads fought each other: the two pycma comparisons at d=100 took 253 s each when they
ran side by side, 8 s with one BLAS thread each (2026-11-30). Set before numpy is imported.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

EXPERIMENTS = str(pathlib.Path(__file__).resolve().parent.parent / "experiments")
if EXPERIMENTS not in sys.path:
    sys.path.insert(0, EXPERIMENTS)

HAS_SPU = importlib.util.find_spec("spu") is not None
NO_SPU = "needs spu (SecretFlow SPU, pyproject's spu==0.9.5), which is not installed here"


def pytest_collection_modifyitems(config, items):
    if HAS_SPU:
        return
    skip = pytest.mark.skip(reason=NO_SPU)
    for item in items:
        if item.get_closest_marker("spu") is not None:
            item.add_marker(skip)


# jax.config names and their environment variables (read by the processes the tests start)
_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """The session's compilation cache directory (every program cached: no size or compile-time
    minimum); in-process through jax.config, in child processes through the environment."""
    import jax

    directory = str(tmp_path_factory.mktemp("jax_cache"))
    values = (directory, 0, 0)
    old_config = {k: getattr(jax.config, k) for k in _CACHE_SETTINGS}
    old_env = {k.upper(): os.environ.get(k.upper()) for k in _CACHE_SETTINGS}
    for key, value in zip(_CACHE_SETTINGS, values):
        jax.config.update(key, value)
        os.environ[key.upper()] = str(value)
    yield directory
    for key, value in old_config.items():
        jax.config.update(key, value)
    for key, value in old_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
