"""The principals as separate objects (issue 12): the data owner holds no weight array, learns
about the weights only the model owner's declared disclosure, and receives from the parties
only the declared outputs."""

import types

import jax
import numpy as np
import pytest

from secfwt_jax import ModelConfig, init_params
from secfwt_jax.backend import Handle, make_backend
from secfwt_jax.backend.common import CompiledFunction
from secfwt_jax.principals import DataOwner, ModelDisclosure, ModelOwner
from secfwt_jax.tasks.planted import make_planted
from secfwt_jax.tuning.loop import TuningConfig, tuning_projection
from secfwt_jax.tuning.projection import embedding_std

CFG = ModelConfig.preset(
    "tiny", initializer_range=0.3, attention="softmax_puma", activation="gelu_puma"
)
TCFG = TuningConfig(projection="normal", popsize=4, intrinsic_dim=4, prompt_len=2,
                    budget=8, eval_every=1,
                    checkpoint_every=0, seed=1)


@pytest.fixture(scope="module")
def setup():
    params = init_params(CFG, seed=0)
    task = make_planted(CFG, params, np.asarray(tuning_projection(TCFG, CFG, params)),
                        prompt_len=TCFG.prompt_len, n_train=16, n_dev=8, n_test=8,
                        seq_len=8, teacher_scale=3.0, prompt_mode=TCFG.prompt_mode, seed=1)
    return params, task


def reachable_arrays(root) -> list:
    """Every numpy / jax array reachable from `root` through attributes, containers and
    closures (modules and classes are not followed)."""
    seen, stack, out = set(), [root], []
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray | jax.Array):
            out.append(o)
        elif isinstance(o, type | types.ModuleType | str | bytes | int | float | bool):
            continue
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        else:
            if isinstance(o, types.FunctionType):
                for cell in o.__closure__ or ():
                    try:
                        stack.append(cell.cell_contents)
                    except ValueError:  # an empty cell
                        pass
            for name in ("__dict__", "__wrapped__", "func", "args", "keywords"):
                try:
                    stack.append(getattr(o, name))
                except Exception:  # noqa: BLE001 - opaque (C++) objects
                    pass
            for name in getattr(type(o), "__slots__", ()):
                if hasattr(o, name):
                    stack.append(getattr(o, name))
    return out


def holds_a_weight(root, params) -> bool:
    weights = [np.asarray(w) for w in jax.tree_util.tree_leaves(params)]
    for a in reachable_arrays(root):
        a = np.asarray(a)
        if any(a.shape == w.shape and np.array_equal(a, w) for w in weights):
            return True
    return False


def test_the_data_owner_refuses_weight_arrays(setup):
    params, task = setup
    be = make_backend("plaintext")
    with pytest.raises(TypeError, match="never holds weight arrays"):
        DataOwner(TCFG, be, CFG, params, ModelDisclosure(0.1), task.label_word_ids)


def test_the_disclosure_gives_the_projection_computed_from_the_weights(setup):
    params, _ = setup
    owner = ModelOwner(CFG, params)
    d = owner.disclosure()
    assert d == ModelDisclosure(embedding_std(params["word_embeddings"]))
    np.testing.assert_array_equal(np.asarray(tuning_projection(TCFG, CFG, params)),
                                  np.asarray(tuning_projection(TCFG, CFG, None, d.embedding_std)))
    handle = owner.share_into(make_backend("plaintext"))
    with pytest.raises(ValueError, match="needs embed_std"):
        tuning_projection(TCFG, CFG, handle)


def test_reachable_arrays_finds_weights_where_they_are(setup):
    """The check below can fail: the model owner holds the weights, and on the plaintext
    backend (no secrecy) the data owner's Handle carries them, found through its tuner."""
    params, task = setup
    owner = ModelOwner(CFG, params)
    assert holds_a_weight(owner, params)
    be = make_backend("plaintext")
    plain = DataOwner(TCFG, be, CFG, owner.share_into(be), owner.disclosure(),
                      task.label_word_ids, progress=False)
    assert holds_a_weight(plain, params)


@pytest.mark.slow
@pytest.mark.spu
def test_under_aby3_each_role_receives_only_what_is_declared(setup, monkeypatch):
    params, task = setup
    received = []  # every output a backend call handed to the data owner
    call = CompiledFunction.__call__

    def recording(self, *args, reveal=True):
        out, cost = call(self, *args, reveal=reveal)
        received.extend(("handle", None) if isinstance(x, Handle) else ("array", np.shape(x))
                        for x in jax.tree_util.tree_leaves(
                            out, is_leaf=lambda x: isinstance(x, Handle)))
        return out, cost

    monkeypatch.setattr(CompiledFunction, "__call__", recording)
    with make_backend("aby3") as be:
        model_owner = ModelOwner(CFG, params)
        weights = model_owner.share_into(be)
        assert isinstance(weights, Handle) and weights.value is None and weights.names
        data_owner = DataOwner(TCFG, be, CFG, weights, model_owner.disclosure(),
                               task.label_word_ids, progress=False)
        summary = data_owner.run(task.train, task.dev, task.test)
        assert not holds_a_weight(data_owner, params)
    assert summary["generations"] == 2
    arrays = {shape for kind, shape in received if kind == "array"}
    n_labels = len(task.label_word_ids)
    # revealed: candidate logits (P, B, C) of training batches, (1, B, C) of evaluations
    assert arrays <= {(TCFG.popsize, 16, n_labels), (1, 16, n_labels), (1, 8, n_labels)}, arrays
    assert ("handle", None) in received  # the shared examples' embeddings stayed in the parties
    assert model_owner.shared_into == [repr(be)]
