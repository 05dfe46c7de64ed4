"""Backends declare what they offer (Capabilities) and the library decides from that, never
from a backend's name: a backend renamed, or a new one with the same capabilities, is treated
the same."""

import subprocess
import sys
import types

import numpy as np
import pytest

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import (
    PROTOCOLS,
    Backend,
    Capabilities,
    make_backend,
    protocol_capabilities,
)
from secfwt_jax.backend.masked_trig import model_ops, reveal_fn, trig_masks_for
from secfwt_jax.model_ops import PLAIN_OPS
from secfwt_jax.tuning.evaluator import PromptEvaluator

CFG = ModelConfig.preset("tiny")


def test_every_protocol_declares_its_capabilities():
    table = {p: protocol_capabilities(p) for p in PROTOCOLS}
    assert [p for p, c in table.items() if c.secure] == ["aby3", "cheetah"]
    assert [p for p, c in table.items() if not c.mpc_program] == ["plaintext"]
    assert [p for p, c in table.items() if c.opens_to_servers] == ["aby3", "semi2k", "cheetah",
                                                                   "ref2k"]
    assert [p for p, c in table.items() if not c.fixed_point] == ["plaintext"]
    assert {p: c.n_parties for p, c in table.items()} == {
        "plaintext": 1, "plaintext_fxp": 1, "aby3": 3, "semi2k": 2, "cheetah": 2, "ref2k": 1}
    assert protocol_capabilities("aby3", "FM128", None).fraction_bits == 26  # the field default


def test_plaintext_backends_satisfy_the_protocol_and_declare_their_field():
    plain, fxp = make_backend("plaintext"), make_backend("plaintext_fxp", field="FM128",
                                                         fraction_bits=20)
    assert isinstance(plain, Backend) and isinstance(fxp, Backend)
    assert plain.capabilities == protocol_capabilities("plaintext")
    assert (fxp.capabilities.field_bits, fxp.capabilities.fraction_bits) == (128, 20)


@pytest.mark.skipif(__import__("importlib").util.find_spec("spu") is None, reason="needs spu")
def test_spu_backend_declares_the_table_capabilities_and_an_opening():
    with make_backend("ref2k") as be:
        assert isinstance(be, Backend)
        assert be.capabilities == protocol_capabilities("ref2k")
        assert reveal_fn(be) is be.open_to_servers()


def test_bad_capabilities_raise_naming_the_accepted_values():
    with pytest.raises(ValueError, match="unknown reveal targets .*accepted: data_owner, servers"):
        Capabilities(False, False, ("everyone",), None, None)
    with pytest.raises(ValueError, match="both set"):
        Capabilities(False, True, ("data_owner",), 64, None)
    with pytest.raises(ValueError, match="unknown protocol 'aby4'"):
        protocol_capabilities("aby4")


class Renamed:
    """Another backend's behaviour under a new name and, optionally, other capabilities."""

    def __init__(self, inner, name, capabilities=None):
        self._inner, self.name = inner, name
        self.capabilities = capabilities or inner.capabilities

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(4, CFG.vocab_size, (3, 7)).astype(np.int32)
    ids[:, 0] = CFG.bos_token_id
    mask_onehot = np.zeros((3, 7), np.float32)
    mask_onehot[:, 4] = 1
    return types.SimpleNamespace(input_ids=ids, attention_mask=np.ones_like(ids),
                                 mask_onehot=mask_onehot, labels=np.array([0, 1, 0]))


def _evaluate(backend):
    params = init_params(CFG, 0)
    ev = PromptEvaluator(backend, CFG, backend.put(params, owner="model"), [10, 20],
                         prompt_len=2, vocab_bucket=0)
    prompts = np.random.default_rng(1).normal(0, 0.02, (2, 2, CFG.hidden_size))
    return ev, ev.logits(ev.share_examples(_batch()), prompts)


@pytest.mark.slow  # over 5 s (README: the fast lane's rule)
def test_evaluator_path_follows_capabilities_not_names():
    # the fixed-point emulation named "plaintext": still the MPC program (one-hot lookups)
    ev_fxp, want_fxp = _evaluate(make_backend("plaintext_fxp"))
    ev, got = _evaluate(Renamed(make_backend("plaintext_fxp"), "plaintext"))
    assert ev.mpc_program and ev.lookups == ev_fxp.lookups == [
        dict(kind="onehot", vocab=CFG.vocab_size, tokens=21)]
    np.testing.assert_array_equal(got, want_fxp)
    # plain jax.jit named "aby3": the plaintext path (gathers, no lookups recorded)
    _, want = _evaluate(make_backend("plaintext"))
    ev, got = _evaluate(Renamed(make_backend("plaintext"), "aby3"))
    assert not ev.mpc_program and ev.lookups == []
    np.testing.assert_array_equal(got, want)


def test_trig_masks_and_opening_follow_capabilities_not_names():
    masked = ModelConfig.preset("tiny", attention="rfa", rfa_trig="masked")
    float_named_aby3 = Renamed(make_backend("plaintext"), "aby3")
    np.testing.assert_array_equal(trig_masks_for(float_named_aby3, (4,))["t"], 0.0)
    assert reveal_fn(float_named_aby3) is None
    assert model_ops(float_named_aby3, masked).reveal is None
    assert model_ops(float_named_aby3, masked.replace(rfa_trig="builtin")) is PLAIN_OPS
    # a fixed-point backend named "plaintext": real masks on its grid
    m = trig_masks_for(Renamed(make_backend("plaintext_fxp"), "plaintext"), (4,), rng=0)
    assert np.any(np.asarray(m["t"]) != 0)


def test_masked_trig_on_a_fixed_point_backend_without_an_opening_is_refused():
    masked = ModelConfig.preset("tiny", attention="rfa", rfa_trig="masked")
    with pytest.raises(ValueError, match="cannot open values to the servers.*rfa_trig='builtin'"):
        model_ops(make_backend("plaintext_fxp"), masked)


def test_plaintext_path_runs_without_spu():
    code = (
        "import sys; sys.modules['spu'] = None\n"  # any `import spu` now raises ImportError
        "import numpy as np\n"
        "from secfwt_jax.backend import make_backend\n"
        "from secfwt_jax.backend.masked_trig import reveal_fn, trig_masks_for\n"
        "assert reveal_fn('plaintext_fxp') is None and reveal_fn('plaintext') is None\n"
        "be = make_backend('plaintext_fxp')\n"
        "out, _ = be.compile(lambda x: x * x)(np.float32([1.5]))\n"
        "assert trig_masks_for(be, (2,), rng=0)['t'].shape[1:] == (2,)\n"
        "print(float(out[0]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2.25"
