"""The public-mask option: the padding mask folded in as a public constant gives the same
secure losses as the secret mask, with fewer bytes; the default keeps the mask secret."""

import numpy as np
import pytest

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import make_backend
from secfwt_jax.backend.common import Handle
from secfwt_jax.tasks.encode import Batch
from secfwt_jax.tasks.planted import random_batch
from secfwt_jax.tuning.evaluator import PromptEvaluator
from secfwt_jax.tuning.public_mask import with_public_mask

CFG = ModelConfig.preset("tiny", attention="softmax_puma", activation="gelu_puma",
                         initializer_range=0.3)


def test_with_public_mask_binds_the_mask_and_checks_its_rank():
    g = with_public_mask(lambda p, e, m, o, *r: (p, e, m.sum(), o, r), np.ones((2, 3)))
    assert g(1, 2, 4, 5) == (1, 2, 6.0, 4, (5,))
    with pytest.raises(ValueError, match="shape"):
        with_public_mask(lambda *a: a, np.ones(3))


@pytest.mark.slow
@pytest.mark.spu
def test_public_mask_matches_the_secret_mask_under_aby3_with_fewer_bytes():
    params = init_params(CFG, seed=0)
    rng = np.random.default_rng(0)
    ids = random_batch(CFG, 4, 10, rng)  # random lengths: padding present
    assert (ids == CFG.pad_token_id).any()
    train = Batch(input_ids=ids, attention_mask=(ids != CFG.pad_token_id).astype(np.int32),
                  mask_onehot=(ids == CFG.mask_token_id).astype(np.float32),
                  labels=np.array([0, 1, 1, 0], np.int32), truncated=np.zeros(4, bool))
    prompts = np.random.default_rng(0).standard_normal((3, 4, CFG.hidden_size)) * 0.02
    out = {}
    with make_backend("aby3") as be:
        handle = be.put(params, owner="model")
        for public in (False, True):
            ev = PromptEvaluator(be, CFG, handle, (10, 20), prompt_len=4,
                                 public_mask=public)
            examples = ev.share_examples(train)
            assert isinstance(examples.mask, Handle) != public  # secret: a share handle
            before = len(ev.costs)
            losses, _ = ev.losses(examples, prompts)
            out[public] = losses, ev.costs[before].bytes_total
    assert np.max(np.abs(out[True][0] - out[False][0])) <= 1e-2
    assert out[True][1] < out[False][1]
