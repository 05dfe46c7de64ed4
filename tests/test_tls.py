"""TLS on the parties' brpc links in mp mode (issue 12): a run with certificates from
experiments/make_certs.sh gives the plaintext result; a CA that did not sign the parties'
certificate stops the mesh from connecting (a clear error, no process left). run.py taking the
certificates (protocol.tls) is checked by the mp run of tests/test_principals_mp.py."""

import multiprocessing
import shutil
import time

import numpy as np
import pytest
from certs import certs  # tests/certs.py

from secfwt_jax.backend import BackendError, make_backend

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def test_tls_options_are_checked(tmp_path):
    pytest.importorskip("spu")
    with pytest.raises(ValueError, match="sim mode uses in-memory links"):
        make_backend("aby3", tls={"cert": "a", "key": "b", "ca": "c"})
    with pytest.raises(ValueError, match=r"tls\['cert'\] = 'nope' is not a file"):
        make_backend("aby3", mode="mp", tls={"cert": "nope", "key": "b", "ca": "c"})
    with pytest.raises(ValueError, match="tls must be a dict with keys"):
        make_backend("aby3", mode="mp", tls={"cert": "a"})
    for mode, value in (("sim", 10), ("mp", 0)):
        with pytest.raises(ValueError, match=f"start_timeout_s={value}: a positive number"):
            make_backend("aby3", mode=mode, start_timeout_s=value)


@pytest.mark.slow
@pytest.mark.spu
def test_tls_links_compute_and_refuse_an_unknown_ca(tmp_path):
    tls = certs(tmp_path / "a")
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    with make_backend("aby3", mode="mp", timeout_s=20, tls=tls) as be:
        out, cost = be.compile(lambda v: v * v + 1)(x)
    np.testing.assert_allclose(out, x * x + 1, atol=1e-4)
    assert cost.bytes_total > 0
    other = certs(tmp_path / "b")
    wrong = dict(tls, ca=other["ca"])  # this CA did not sign the parties' certificate
    # start_timeout_s bounds the wait for a mesh that cannot connect (default: at least 60 s)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="did not finish start within 15 s"):
        make_backend("aby3", mode="mp", timeout_s=5, tls=wrong, start_timeout_s=15)
    assert time.monotonic() - t0 < 45
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("spu-party")]
