"""Exact save and restore of optimizer states (any pytree of arrays) as ``.npz`` files.

Every leaf is written with its dtype and bytes unchanged (the PRNG key as its uint32 data),
so a restored state continues bit for bit like the one saved. Writes go to a temporary file
that is then renamed, so a run killed while saving never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_PATHS = "__paths__"


def _leaves(state: Any) -> tuple[list[str], list[Any], Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    return paths, [leaf for _, leaf in flat], treedef


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write ``state`` (a pytree of arrays, e.g. an optimizer state) to ``path`` (.npz).

    Typed PRNG keys are stored as their key data. The parent directory must exist.
    """
    paths, leaves, _ = _leaves(state)
    arrays = {}
    for i, leaf in enumerate(leaves):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arrays[f"leaf_{i}"] = np.asarray(leaf)
    arrays[_PATHS] = np.asarray(json.dumps(paths))
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_state(path: str | os.PathLike, like: Any) -> Any:
    """Read a state written by :func:`save_state` into the structure of ``like``.

    ``like`` is a template state of the same optimizer and shapes (e.g. ``opt.init(...)``);
    its values are ignored. Raises ValueError naming the first leaf whose path, shape or
    dtype differs from the file.
    """
    want_paths, want_leaves, treedef = _leaves(like)
    with np.load(os.fspath(path)) as data:
        paths = json.loads(str(data[_PATHS]))
        if paths != want_paths:
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} holds leaves {paths}; the template has "
                f"{want_paths}"
            )
        leaves = []
        for i, (name, ref) in enumerate(zip(paths, want_leaves)):
            arr = data[f"leaf_{i}"]
            ref = jnp.asarray(ref)
            if jnp.issubdtype(ref.dtype, jax.dtypes.prng_key):
                leaf = jax.random.wrap_key_data(arr, impl=jax.random.key_impl(ref))
                ok = leaf.shape == ref.shape
            else:
                leaf = jnp.asarray(arr)
                ok = arr.shape == ref.shape and arr.dtype == ref.dtype
            if not ok:
                raise ValueError(
                    f"checkpoint leaf {name} has shape {arr.shape} dtype {arr.dtype}; the "
                    f"template has shape {ref.shape} dtype {ref.dtype}"
                )
            leaves.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, leaves)
