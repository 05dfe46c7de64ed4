"""SEMI2K's dealer (issue 12): no secure one exists in spu 0.9.5, so there is no default;
TrustedFirstParty only on explicit request, with a warning, and named in every cost record."""

import numpy as np
import pytest

from secfwt_jax.backend import (
    DEALERS,
    InsecureDealerWarning,
    check_dealer,
    make_backend,
    sum_costs,
)

TFP = "trusted_first_party"


def test_semi2k_without_a_dealer_is_refused_with_the_reasons():
    with pytest.raises(ValueError) as e:
        make_backend("semi2k")
    msg = str(e.value)
    assert "semi2k needs a dealer" in msg and "Accepted: trusted_first_party" in msg
    assert "trusted_third_party" in msg and "multi_party" in msg and "cheetah" in msg


@pytest.mark.parametrize("dealer, why", [
    ("trusted_third_party", "beaver server"), ("multi_party", "unsupported beaver type 2"),
    ("ttp", "unknown dealer 'ttp'"),
])
def test_unavailable_or_unknown_dealers_are_refused(dealer, why):
    with pytest.raises(ValueError, match=why):
        check_dealer("semi2k", dealer)


def test_dealer_is_for_semi2k_only():
    assert DEALERS == (TFP,)
    assert check_dealer("aby3", None) is None and check_dealer("plaintext", None) is None
    with pytest.raises(ValueError, match="only semi2k takes a dealer"):
        make_backend("aby3", dealer=TFP)


def test_trusted_first_party_warns_and_is_named_in_every_record():
    pytest.importorskip("spu")
    from spu import libspu

    x = np.linspace(-1, 1, 8, dtype=np.float32)
    with pytest.warns(InsecureDealerWarning, match="hides nothing from party 0"):
        be = make_backend("semi2k", dealer=TFP)
    with be:
        assert be.config.beaver_type == libspu.RuntimeConfig.BeaverType.TrustedFirstParty
        assert "dealer='trusted_first_party'" in repr(be)
        f = be.compile(lambda v: v * v)
        costs = [f(x)[1] for _ in range(2)]
    assert all(c.dealer == TFP and c.to_dict()["setting"]["dealer"] == TFP for c in costs)
    assert sum_costs(costs).dealer == TFP
    with make_backend("aby3") as be:
        assert "dealer" not in be.compile(lambda v: v * v)(x)[1].to_dict()["setting"]


def test_beaver_type_only_through_dealer():
    pytest.importorskip("spu")
    with pytest.raises(ValueError, match="through dealer="):
        make_backend("semi2k", dealer=TFP, runtime_options={"beaver_type": "MultiParty"})


def test_this_spu_build_has_no_multiparty_dealer_for_semi2k():
    """The reason DEALERS holds no secure entry: SPU refuses MultiParty for SEMI2K. If a newer
    wheel accepts it, this fails and multi_party should become the default."""
    pytest.importorskip("spu")
    from spu import libspu

    from secfwt_jax.backend.spu_backend import PartyError, SimParties, runtime_config

    cfg = runtime_config("aby3", "FM64", 18)
    cfg.protocol = libspu.ProtocolKind.SEMI2K
    cfg.beaver_type = libspu.RuntimeConfig.BeaverType.MultiParty
    with pytest.raises(PartyError, match="unsupported beaver type 2"):
        SimParties(2, cfg, 5.0)


@pytest.mark.slow
@pytest.mark.spu
def test_run_py_semi2k_needs_the_dealer_named_and_records_it(tmp_path):
    """experiments/run.py protocol=semi2k: refused without protocol.dealer; with
    trusted_first_party the summary names the dealer (tiny budget: one generation)."""
    import json
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent

    def run(*overrides):
        cmd = [sys.executable, str(root / "experiments" / "run.py"), "protocol=semi2k",
               "progress=false", "eval_every=0", *overrides]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=900)

    out = run(f"hydra.run.dir={tmp_path / 'none'}", "budget=6")
    assert out.returncode != 0 and "semi2k needs a dealer" in out.stdout + out.stderr
    out = run(f"hydra.run.dir={tmp_path / 'tfp'}", "budget=6",
              "protocol.dealer=trusted_first_party")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "InsecureDealerWarning" in out.stderr
    summary = json.loads((tmp_path / "tfp" / "summary.json").read_text())
    assert summary["protocol"] == "semi2k" and summary["dealer"] == "trusted_first_party"
