"""The secure evaluator's embedding lookup: the two-stage sub-vocabulary lookup gives the same
logits as the whole-vocabulary one-hot and as plaintext, shares fewer entries, and reveals only
the bucketed number of distinct tokens."""

import types

import numpy as np
import pytest

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import make_backend
from secfwt_jax.backend.fxp import PlaintextFxpBackend
from secfwt_jax.tuning import ingest as ingest_module
from secfwt_jax.tuning.evaluator import PromptEvaluator

CFG = ModelConfig.preset("tiny", vocab_size=3000)
PARAMS = init_params(CFG, 0)


def _batch(n=12, s=10, distinct=40, seed=0):
    """n examples of s tokens drawn from `distinct` token ids; the last one has a padded tail."""
    rng = np.random.default_rng(seed)
    pool = rng.choice(np.arange(4, CFG.vocab_size), distinct, replace=False)
    ids = rng.choice(pool, (n, s)).astype(np.int32)
    ids[:, 0] = CFG.bos_token_id
    mask = np.ones((n, s), np.int32)
    mask[-1, s - 3:] = 0
    ids[mask == 0] = CFG.pad_token_id
    mask_onehot = np.zeros((n, s), np.float32)
    mask_onehot[:, 3] = 1
    return types.SimpleNamespace(input_ids=ids, attention_mask=mask, mask_onehot=mask_onehot,
                                 labels=rng.integers(0, 2, n))


PROMPTS = np.random.default_rng(1).normal(0, 0.02, (2, 3, CFG.hidden_size)).astype(np.float32)


def _logits(backend, batch, bucket):
    ev = PromptEvaluator(backend, CFG, backend.put(PARAMS, owner="model"), [10, 20],
                         prompt_len=3, vocab_bucket=bucket)
    return ev, ev.logits(ev.share_examples(batch), PROMPTS)


@pytest.mark.slow
def test_subvocab_lookup_equals_onehot_lookup_and_plaintext(monkeypatch):
    # small chunks, so both stages run in several chunks and are concatenated under "MPC"
    monkeypatch.setattr(ingest_module, "EMBED_CHUNK_ELEMENTS", 40_000)
    batch = _batch()
    _, plain = _logits(make_backend("plaintext"), batch, 16)
    with PlaintextFxpBackend() as be:
        sub_ev, sub = _logits(be, batch, 16)
    with PlaintextFxpBackend() as be:
        full_ev, full = _logits(be, batch, 0)
    n_distinct = len(np.unique(batch.input_ids))
    assert sub_ev.lookups == [dict(kind="subvocab", vocab=3000, tokens=120, rows=48,
                                   distinct=n_distinct)]
    assert full_ev.lookups == [dict(kind="onehot", vocab=3000, tokens=120)]
    np.testing.assert_allclose(sub, full, atol=2e-3)
    np.testing.assert_allclose(sub, plain, atol=2e-3)
    assert len(sub_ev.costs) > 3  # chunked: several row and token chunks plus concatenations


@pytest.mark.slow
def test_lookup_takes_the_whole_vocabulary_when_that_is_cheaper():
    with PlaintextFxpBackend() as be:
        ev, _ = _logits(be, _batch(n=1, s=6, distinct=5), 1024)
    assert ev.lookups[0]["kind"] == "onehot"  # 1024 rows x 3000 > 6 tokens x 3000


def test_negative_vocab_bucket_is_an_error():
    with pytest.raises(ValueError, match="vocab_bucket must be >= 0"):
        PromptEvaluator(make_backend("plaintext"), CFG, PARAMS, [10], prompt_len=0,
                        vocab_bucket=-1)


@pytest.mark.slow
@pytest.mark.spu
def test_subvocab_lookup_under_aby3_shares_fewer_bytes_and_matches_plaintext():
    batch = _batch(n=16, s=10)
    _, plain = _logits(make_backend("plaintext"), batch, 16)
    shared = {}
    for bucket in (16, 0):
        with make_backend("aby3") as be:
            ev, got = _logits(be, batch, bucket)
            np.testing.assert_allclose(got, plain, atol=1e-2)
            shared[bucket] = sum(c.input_share_bytes for c in ev.costs[:-1])
    # entries: 48 x 3000 + 160 x 48 rows vs 160 x 3000 (+ 160 x 514 positions in both)
    assert shared[16] < 0.5 * shared[0]
